"""PSNR/SSIM against scikit-image and hand-computed cases; bad input raises the right error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mrfnet.evaluate.metrics import MetricOptions, psnr, rgb_to_y, ssim


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, size=(67, 83, 3), dtype=np.uint8)
    noisy = np.clip(sharp + rng.normal(0, 12, sharp.shape), 0, 255).astype(np.uint8)
    return sharp, noisy


def test_psnr_and_skimage_ssim_agree_with_skimage(pair):
    sharp, noisy = pair
    expected_ssim = structural_similarity(sharp, noisy, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=255, channel_axis=-1)
    assert ssim(sharp, noisy) == pytest.approx(expected_ssim, abs=1e-6)
    assert psnr(sharp, noisy) == pytest.approx(peak_signal_noise_ratio(sharp, noisy, data_range=255), abs=1e-6)


def test_gaussian2d_equals_skimage_away_from_the_border(pair):
    """Both average full 11x11 windows only: reflect-and-crop vs valid filtering give the same region."""
    sharp, noisy = pair
    assert ssim(sharp, noisy, MetricOptions(ssim="gaussian2d")) == pytest.approx(ssim(sharp, noisy), abs=1e-9)


def test_identical_images():
    image = np.random.default_rng(1).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    assert psnr(image, image) == math.inf
    for variant in ("skimage", "gaussian2d", "matlab3d"):
        assert ssim(image, image, MetricOptions(ssim=variant)) == pytest.approx(1.0, abs=1e-12)


def test_a_constant_shift_gives_the_hand_computed_psnr():
    image = np.full((20, 20, 3), 100, dtype=np.uint8)
    assert psnr(image, image + 5) == pytest.approx(10 * math.log10(255**2 / 25))
    # SSIM of a constant shift: only the luminance term differs, (2 mu1 mu2 + C1) / (mu1^2 + mu2^2 + C1)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 105 + c1) / (100**2 + 105**2 + c1)
    for variant in ("skimage", "gaussian2d", "matlab3d"):
        assert ssim(image, image + 5, MetricOptions(ssim=variant)) == pytest.approx(expected, abs=1e-9)


def test_known_gaussian_noise_gives_its_psnr():
    rng = np.random.default_rng(2)
    image = np.full((256, 256), 128, dtype=np.uint8)
    noisy = (image + rng.choice([-4, 4], size=image.shape)).astype(np.uint8)  # every pixel off by exactly 4
    assert psnr(image, noisy) == pytest.approx(10 * math.log10(255**2 / 16))


def test_y_channel_and_border_crop():
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    assert rgb_to_y(rgb)[0, 0] == pytest.approx(65.481 + 16)
    other = rgb.copy()
    other[:2] = 0  # differences only in the top two rows
    assert psnr(rgb, other, MetricOptions(crop_border=2)) == math.inf
    assert psnr(rgb, other, MetricOptions(y_channel=True)) < 30


def test_matlab3d_differs_from_the_per_channel_variants(pair):
    sharp, noisy = pair
    assert abs(ssim(sharp, noisy, MetricOptions(ssim="matlab3d")) - ssim(sharp, noisy)) > 1e-4


@pytest.mark.parametrize(("a", "b", "error"), [
    (np.zeros((16, 16, 3), np.uint8), np.zeros((16, 17, 3), np.uint8), ValueError),
    (np.zeros((16, 16, 3), np.float32), np.zeros((16, 16, 3), np.float32), TypeError),
    (np.zeros((16, 16, 4), np.uint8), np.zeros((16, 16, 4), np.uint8), ValueError),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), ValueError),  # smaller than the window
])
def test_bad_input_is_refused(a, b, error):
    with pytest.raises(error):
        ssim(a, b)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown SSIM variant"):
        MetricOptions(ssim="matlab")
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), MetricOptions(crop_border=4))
