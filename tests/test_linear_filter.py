"""The least-squares linear deblurring filter (mrfnet.evaluate.linear_filter): it recovers known filters, samples
a bounded, seeded set of pixels, and scores the way `mrfnet score` does."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data_prep.lmdb_writer import LmdbWriter
from data_prep.records import encode_pair, iter_pairs
from mrfnet.evaluate.linear_filter import LinearFilter, fit_filter, score_filter
from mrfnet.evaluate.metrics import MetricOptions, psnr, ssim
from mrfnet.evaluate.testsets import LmdbTestSet
from mrfnet.runtime.errors import InvalidValue


def texture(seed: int, side: int = 64) -> np.ndarray:
    """A photograph-like uint8 BGR texture: smoothed noise stretched over most of 0..255."""
    noise = np.random.default_rng(seed).standard_normal((side, side, 3))
    smooth = cv2.GaussianBlur(noise, (0, 0), 1.2)
    return np.clip(np.rint(128 + smooth / smooth.std() * 50), 0, 255).astype(np.uint8)


def box_blurred(sharp: np.ndarray) -> np.ndarray:
    return cv2.blur(sharp, (3, 3), borderType=cv2.BORDER_REPLICATE)


def test_the_identity_is_recovered_when_blur_is_sharp():
    images = [texture(seed, 32) for seed in range(3)]
    filt = fit_filter([(image, image) for image in images], size=5, samples=3000)
    expected = np.zeros((5, 5))
    expected[2, 2] = 1
    np.testing.assert_allclose(filt.kernel, expected, atol=1e-9)
    assert abs(filt.bias) < 1e-6 and filt.size == 5 and filt.rows == 3000 and filt.pairs == 3
    assert np.array_equal(filt.apply(images[0]), images[0])


def test_a_box_blur_is_undone_well_beyond_the_blurry_input():
    train = [(box_blurred(sharp), sharp) for sharp in (texture(seed) for seed in range(4))]
    filt = fit_filter(train, size=9, samples=20_000)
    assert filt.kernel[4, 4] > 1 and filt.kernel.sum() == pytest.approx(1, abs=0.05)  # sharpens, keeps the mean
    for seed in (10, 11):  # held-out textures
        sharp = texture(seed)
        blurred = box_blurred(sharp)
        assert psnr(sharp, filt.apply(blurred)) > psnr(sharp, blurred) + 5


def test_the_sample_is_bounded_seeded_and_the_same_from_lmdb_triples(tmp_path):
    pairs = [(box_blurred(sharp), sharp) for sharp in (texture(seed, 40) for seed in range(6))]
    path = tmp_path / "train_lmdb"
    with LmdbWriter(path) as writer:
        for index, (blurred, sharp) in enumerate(pairs):
            writer.put(f"{index:08d}_p{index}", encode_pair(blurred, sharp), {})
    # 1000 rows of 6 x 4800 pixel values: compaction runs several times on the way
    first = fit_filter(pairs, size=3, samples=1000, seed=4)
    again = fit_filter(iter_pairs(path), size=3, samples=1000, seed=4)
    assert first.rows == again.rows == 1000 and first.pairs == again.pairs == 6
    np.testing.assert_array_equal(first.kernel, again.kernel)
    assert first.bias == again.bias
    other = fit_filter(pairs, size=3, samples=1000, seed=5)
    assert not np.array_equal(other.kernel, first.kernel)
    no_bias = fit_filter(pairs, size=3, samples=1000, seed=4, bias=False)
    assert no_bias.bias == 0.0


def test_score_filter_matches_the_metrics_computed_directly(tmp_path):
    filt = fit_filter([(box_blurred(sharp), sharp) for sharp in (texture(seed) for seed in range(3))], size=5,
                      samples=5000)
    path = tmp_path / "test_lmdb"
    tests = {f"{index:08d}_t{index}": (box_blurred(texture(seed)), texture(seed))
             for index, seed in enumerate((20, 21, 22))}
    with LmdbWriter(path) as writer:
        for key, (blurred, sharp) in tests.items():
            writer.put(key, encode_pair(blurred, sharp), {})
    for metrics in (MetricOptions(), MetricOptions(ssim="matlab3d", y_channel=True)):
        scores = score_filter(filt, LmdbTestSet(path), metrics)
        assert scores["images"] == 3 and [row["name"] for row in scores["per_image"]] == list(tests)
        rgb = [(sharp[..., ::-1], blurred[..., ::-1], filt.apply(blurred)[..., ::-1])
               for blurred, sharp in tests.values()]
        assert scores["psnr"] == pytest.approx(np.mean([psnr(s, out, metrics) for s, _, out in rgb]))
        assert scores["ssim"] == pytest.approx(np.mean([ssim(s, out, metrics) for s, _, out in rgb]))
        assert scores["blur_psnr"] == pytest.approx(np.mean([psnr(s, b, metrics) for s, b, _ in rgb]))
        assert scores["blur_ssim"] == pytest.approx(np.mean([ssim(s, b, metrics) for s, b, _ in rgb]))
        assert scores["psnr_gain"] == pytest.approx(scores["psnr"] - scores["blur_psnr"]) and scores["psnr_gain"] > 3


def test_apply_keeps_single_channel_images_and_rounds_like_a_model():
    filt = LinearFilter(np.full((3, 3), 1 / 9), 0.4, 1, 1)
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 16
    out = filt.apply(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    expected = cv2.blur(image.astype(np.float64), (3, 3), borderType=cv2.BORDER_REPLICATE) + 0.4
    np.testing.assert_array_equal(out[..., 0], np.clip(np.rint(expected), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("pairs, kwargs, message", [
    ([], {}, "no pairs"),
    ([(np.zeros((8, 8, 3), np.uint8),) * 2], dict(size=4), "odd"),
    ([(np.zeros((8, 8, 3), np.uint8),) * 2], dict(size=3, samples=5), "at least 10"),
    ([(np.zeros((2, 2, 1), np.uint8),) * 2], dict(size=3), "fewer than the 10 unknowns"),
    ([(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))], {}, "differ in shape"),
    ([(np.zeros((8, 8, 3), np.float32),) * 2], {}, "uint8"),
])
def test_bad_input_is_refused(pairs, kwargs, message):
    with pytest.raises(InvalidValue, match=message):
        fit_filter(pairs, **kwargs)
