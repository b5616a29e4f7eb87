"""The least-squares linear deblurring filter: what one K x K convolution can recover of a blur distribution.

A model's gain over the blurry input means little without a floor to beat that is not the identity: a
single linear filter fitted by least squares to the training pairs is the best any "learned sharpening"
with no non-linearity can do on those blurs, so a net that does not beat it on the same test set has not
learned to deblur (docs/architecture.md, "Training on a small budget").

One kernel serves every channel and every blur of the training set (it cannot adapt to a pair's own
kernel), plus a constant bias: the clipping of the blurred uint8 images and the noise shift the mean a
little, and an intercept costs one unknown. The rows are pixels sampled uniformly, without replacement,
from all channels of all pairs (``samples`` at most, fixed by ``seed``), so the fit takes bounded memory
and time whatever the training set's size; the system is solved by ``numpy.linalg.lstsq`` in float64.

Images are H x W x C uint8 BGR, as ``data_prep.records.iter_pairs`` yields them; scores follow
``mrfnet score`` (mrfnet.evaluate.scoring): RGB order, mrfnet.evaluate.metrics with the given options.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from mrfnet.evaluate.metrics import MetricOptions, psnr, ssim
from mrfnet.runtime.errors import InvalidValue

log = logging.getLogger(__name__)

DEFAULT_SIZE = 9
# 200k rows x 82 unknowns in float64 is 130 MB and about a second of lstsq: ample for 82 unknowns.
DEFAULT_SAMPLES = 200_000
# Filtering replicates the edge pixels, as the synthetic blur (data_prep.blur.BORDER) and the sampled
# windows (np.pad mode "edge") do, so the fit and its use see the same borders.
BORDER = cv2.BORDER_REPLICATE
# `mrfnet score`'s defaults: skimage SSIM on RGB, no border crop.
DEFAULT_METRICS = MetricOptions()


@dataclass(frozen=True, eq=False)
class LinearFilter:
    """A fitted filter: ``kernel`` (size x size float64, correlation weights as cv2.filter2D applies them),
    ``bias`` (added after filtering, 8-bit levels) and how many pixel rows and pairs it was fitted on."""

    kernel: np.ndarray
    bias: float
    rows: int
    pairs: int

    @property
    def size(self) -> int:
        return int(self.kernel.shape[0])

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The filtered image, rounded and clipped to uint8 like a model's output (mrfnet.infer.tiling)."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise InvalidValue(f"the filter applies to uint8 images, got {getattr(image, 'dtype', type(image))}")
        filtered = cv2.filter2D(image.astype(np.float64), cv2.CV_64F, self.kernel, borderType=BORDER)
        filtered = filtered.reshape(image.shape) + self.bias  # filter2D drops a single channel's axis
        return np.clip(np.rint(filtered), 0, 255).astype(np.uint8)


def _checked_pair(item: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(blur, sharp) of an item (blur, sharp) or (key, blur, sharp), as data_prep.records.iter_pairs yields."""
    blur, sharp = item[-2], item[-1]
    for name, array in (("blurred", blur), ("sharp", sharp)):
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 3:
            raise InvalidValue(f"the {name} image of a pair must be an H x W x C uint8 array, got "
                               f"{getattr(array, 'dtype', type(array))} {getattr(array, 'shape', '')}")
    if blur.shape != sharp.shape:
        raise InvalidValue(f"a pair's images differ in shape: {blur.shape} vs {sharp.shape}")
    return blur, sharp


def _windows(blur: np.ndarray, picks: np.ndarray, size: int) -> np.ndarray:
    """The size x size neighbourhood (one channel, edges replicated) of each flat index in ``picks``, as uint8
    rows in kernel order."""
    radius = size // 2
    padded = np.pad(blur, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    y, x, c = np.unravel_index(picks, blur.shape)
    dy, dx = np.mgrid[0:size, 0:size]
    return padded[y[:, None] + dy.ravel(), x[:, None] + dx.ravel(), c[:, None]]


def _smallest(keys: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` smallest ``keys`` (all of them when there are fewer)."""
    if len(keys) <= count:
        return np.arange(len(keys))
    return np.argpartition(keys, count - 1)[:count]


def _sample_rows(pairs: Iterable[tuple[Any, ...]], size: int, samples: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Up to ``samples`` (window, sharp value) rows drawn uniformly from every pixel of every channel of the pairs.

    Each pixel gets a random key and the rows with the smallest keys are kept (a bottom-k sample), compacted
    whenever twice ``samples`` have piled up, so memory stays bounded and the sample does not depend on the
    pairs' sizes or on how often compaction ran.
    """
    keys, rows, targets = [], [], []
    pending, threshold, count = 0, np.inf, 0
    for item in pairs:
        blur, sharp = _checked_pair(item)
        draw = rng.random(blur.size)
        picks = np.flatnonzero(draw < threshold)
        picks = picks[_smallest(draw[picks], samples)]
        keys.append(draw[picks])
        rows.append(_windows(blur, picks, size))
        targets.append(sharp.reshape(-1)[picks])
        pending += len(picks)
        count += 1
        if pending >= 2 * samples:
            keep = _smallest(np.concatenate(keys), samples)
            keys, rows, targets = ([np.concatenate(part)[keep]] for part in (keys, rows, targets))
            threshold, pending = float(keys[0].max()), samples
    if count == 0:
        raise InvalidValue("no pairs to fit the linear filter on")
    keep = _smallest(np.concatenate(keys), samples)
    return np.concatenate(rows)[keep], np.concatenate(targets)[keep], count


def fit_filter(pairs: Iterable[tuple[Any, ...]], size: int = DEFAULT_SIZE, samples: int = DEFAULT_SAMPLES,
               seed: int = 0, *, bias: bool = True) -> LinearFilter:
    """The size x size filter (plus a bias unless ``bias`` is False) minimising the squared error between the
    filtered blurred images and the sharp ones, over up to ``samples`` pixels sampled with ``seed``.

    ``pairs``: (blur, sharp) or (key, blur, sharp) items of H x W x C uint8 arrays, e.g.
    ``data_prep.records.iter_pairs(train_lmdb)``; read once, in order.
    """
    if not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise InvalidValue(f"the filter's side must be a positive odd integer (so it does not shift the image), "
                           f"got {size!r}")
    unknowns = size * size + int(bias)
    if not isinstance(samples, int) or samples < unknowns:
        raise InvalidValue(f"a {size}x{size} filter needs at least {unknowns} sampled pixels, got {samples!r}")
    start = time.perf_counter()
    windows, targets, count = _sample_rows(pairs, size, samples, np.random.default_rng(seed))
    if len(targets) < unknowns:
        raise InvalidValue(f"the pairs hold {len(targets)} pixel values, fewer than the {unknowns} unknowns of a "
                           f"{size}x{size} filter")
    design = windows.astype(np.float64)
    if bias:
        design = np.hstack([design, np.ones((len(design), 1))])
    solution = np.linalg.lstsq(design, targets.astype(np.float64), rcond=None)[0]
    kernel = solution[:size * size].reshape(size, size)
    fitted = LinearFilter(kernel, float(solution[-1]) if bias else 0.0, len(targets), count)
    log.info("fitted a %dx%d linear filter on %d pixels of %d pairs in %.1f s (kernel sum %.4f, bias %.3f)",
             size, size, fitted.rows, count, time.perf_counter() - start, kernel.sum(), fitted.bias)
    return fitted


def score_filter(filt: LinearFilter, test_set: Iterable[tuple[str, np.ndarray, np.ndarray]],
                 metrics: MetricOptions = DEFAULT_METRICS) -> dict[str, Any]:
    """Mean PSNR/SSIM of the filtered test images and of the blurry inputs, scored as ``mrfnet score`` scores a
    model (RGB order, the same metric options), with the gains and one row per image.

    ``test_set``: (name, blur, sharp) items, e.g. a mrfnet.evaluate.testsets.TestSet or
    ``data_prep.records.iter_pairs(test_lmdb)``.
    """
    rows = []
    for name, blur, sharp in test_set:
        blur, sharp = _checked_pair((blur, sharp))
        sharp_rgb, blur_rgb, out_rgb = sharp[..., ::-1], blur[..., ::-1], filt.apply(blur)[..., ::-1]
        rows.append({"name": name, "psnr": psnr(sharp_rgb, out_rgb, metrics), "ssim": ssim(sharp_rgb, out_rgb, metrics),
                     "blur_psnr": psnr(sharp_rgb, blur_rgb, metrics), "blur_ssim": ssim(sharp_rgb, blur_rgb, metrics)})
    if not rows:
        raise InvalidValue("nothing to score: the test set is empty")
    means = {key: float(np.mean([row[key] for row in rows])) for key in ("psnr", "ssim", "blur_psnr", "blur_ssim")}
    return {"images": len(rows), **means, "psnr_gain": means["psnr"] - means["blur_psnr"],
            "ssim_gain": means["ssim"] - means["blur_ssim"], "per_image": rows}
