"""PSNR and SSIM of uint8 images, with every convention explicit.

Published deblurring numbers disagree on SSIM: MATLAB's `ssim` on an RGB array is a 3-D SSIM
(an 11x11x11 Gaussian over rows, columns and channels, replicate padding); BasicSR averages a
per-channel 2-D SSIM over the valid region; skimage (DeepDeblur's choice) filters with reflect
padding and crops the border. Nothing here is guessed from the data: the data range is given,
images must be uint8 of one shape, and the variant is named.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from data_prep.option_fields import non_negative_int, option
from mrfnet.runtime.errors import InvalidValue

SSIM_VARIANTS = ("skimage", "gaussian2d", "matlab3d")
# The argument group of the metric flags in --help (`mrfnet score`).
METRICS = "metrics (defaults: skimage SSIM, RGB, no border crop, data range 255)"


SIGMA = 1.5


RADIUS = 5  # 11 taps: skimage's truncate=3.5 at sigma 1.5, BasicSR's 11x11, MATLAB's 2*ceil(3*sigma)+1


K1, K2 = 0.01, 0.03


@dataclass(frozen=True)
class MetricOptions:
    """How to score: SSIM variant, Y channel only (BT.601, MATLAB coefficients), border crop, data range; each
    a flag of `mrfnet score` but the data range (images are uint8)."""

    ssim: str = option("skimage", "SSIM variant: skimage (Gaussian, Wang et al.), gaussian2d (BasicSR), matlab3d "
                                  "(MATLAB ssim on RGB)", choices=SSIM_VARIANTS, group=METRICS)
    y_channel: bool = option(False, "score the BT.601 Y channel only (default: RGB)", group=METRICS)
    crop_border: int = option(0, "pixels cut from each side", parse=non_negative_int, group=METRICS)
    data_range: float = option(255.0, "the images' value range", cli=False)

    def __post_init__(self) -> None:
        if self.ssim not in SSIM_VARIANTS:
            raise InvalidValue(f"unknown SSIM variant {self.ssim!r}; choose one of {', '.join(SSIM_VARIANTS)}")
        if self.crop_border < 0 or self.data_range <= 0:
            raise InvalidValue("crop_border must be >= 0 and data_range > 0")


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB uint8 image, as MATLAB's rgb2ycbcr (16..235), in float64."""
    return image.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255.0 + 16.0


def _prepare(reference: np.ndarray, image: np.ndarray, options: MetricOptions) -> tuple[np.ndarray, np.ndarray]:
    for name, array in (("reference", reference), ("image", image)):
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
            raise TypeError(f"{name} must be a uint8 array (round outputs to uint8 before scoring), "
                            f"got {getattr(array, 'dtype', type(array))}")
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3)):
            raise InvalidValue(f"{name} must be H x W or H x W x {{1,3}}, got shape {array.shape}")
    if reference.shape != image.shape:
        raise InvalidValue(f"images differ in shape: {reference.shape} vs {image.shape}")
    pair = [reference.astype(np.float64), image.astype(np.float64)]
    if options.y_channel:
        if reference.ndim != 3 or reference.shape[2] != 3:
            raise InvalidValue("--y-channel needs RGB images")
        pair = [rgb_to_y(reference), rgb_to_y(image)]
    pair = [p if p.ndim == 3 else p[..., None] for p in pair]
    border = options.crop_border
    if border:
        if 2 * border >= min(pair[0].shape[:2]):
            raise InvalidValue(f"crop border {border} leaves nothing of a {reference.shape[:2]} image")
        pair = [p[border:-border, border:-border] for p in pair]
    return pair[0], pair[1]


def psnr(reference: np.ndarray, image: np.ndarray, options: MetricOptions = MetricOptions()) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    a, b = _prepare(reference, image, options)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(options.data_range**2 / mse)


def _ssim_map(a: np.ndarray, b: np.ndarray, blur, data_range: float) -> np.ndarray:
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def _ssim_skimage(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """skimage's structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)."""
    def blur(x):
        return gaussian_filter(x, sigma=SIGMA, truncate=3.5, mode="reflect")

    scores = []
    for channel in range(a.shape[2]):
        full = _ssim_map(a[..., channel], b[..., channel], blur, data_range)
        scores.append(full[RADIUS:-RADIUS, RADIUS:-RADIUS].mean(dtype=np.float64))
    return float(np.mean(scores))


def _ssim_gaussian2d(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """BasicSR's calculate_ssim: per-channel 11x11 Gaussian, valid region only, mean over channels."""
    kernel = cv2.getGaussianKernel(2 * RADIUS + 1, SIGMA)

    def blur(x):
        return cv2.sepFilter2D(x, cv2.CV_64F, kernel, kernel)[RADIUS:-RADIUS, RADIUS:-RADIUS]

    scores = []
    for channel in range(a.shape[2]):
        scores.append(_ssim_map(a[..., channel], b[..., channel], blur, data_range).mean(dtype=np.float64))
    return float(np.mean(scores))


def _ssim_matlab3d(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """MATLAB's ssim(A, ref) on an H x W x C array: 3-D Gaussian (sigma 1.5, 11 taps), replicate padding."""
    def blur(x):
        return gaussian_filter(x, sigma=SIGMA, truncate=RADIUS / SIGMA, mode="nearest")

    return float(_ssim_map(a, b, blur, data_range).mean(dtype=np.float64))


def ssim(reference: np.ndarray, image: np.ndarray, options: MetricOptions = MetricOptions()) -> float:
    """Structural similarity with the variant named in ``options``."""
    a, b = _prepare(reference, image, options)
    if options.ssim != "matlab3d" and min(a.shape[:2]) <= 2 * RADIUS:
        raise InvalidValue(f"SSIM needs images larger than {2 * RADIUS + 1} pixels a side, got {a.shape[:2]}")
    variant = {"skimage": _ssim_skimage, "gaussian2d": _ssim_gaussian2d, "matlab3d": _ssim_matlab3d}[options.ssim]
    return variant(a, b, options.data_range)
