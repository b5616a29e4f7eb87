"""Whole images or overlapping tiles through a deploy net, blended back; padding to the net's stride."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from netgen import INPUT, PREDICTION
from netgen.variants import STRIDE

log = logging.getLogger(__name__)

DEFAULT_OVERLAP = 128  # pixels shared by neighbouring tiles; see docs/architecture.md for the tolerance


DEFAULT_MAX_MEMORY_GB = 4.0  # budget that picks the tile size when none is given


BLENDS = ("cosine", "linear")


@dataclass(frozen=True)
class AutoTile:
    """Tiles picked per image to fit ``max_pixels`` input pixels: none if the whole image fits; else tiles
    spanning the image's short side when they can (one row of tiles: fewest overlaps), else squares."""

    max_pixels: int
    overlap: int = DEFAULT_OVERLAP

    def shape_for(self, height: int, width: int) -> tuple[int, int] | None:
        """(tile height, tile width) for a padded image of ``height`` x ``width``, or None for one pass."""
        if height * width <= self.max_pixels:
            return None
        smallest = max(2 * self.overlap, 4 * STRIDE)
        for spans_height in (height <= width, height > width):
            span, other = (height, width) if spans_height else (width, height)
            side = self.max_pixels // span // STRIDE * STRIDE
            if smallest <= side < other:
                side = self._balanced(other, side, smallest)
                return (span, side) if spans_height else (side, span)
        side = max(smallest, math.isqrt(self.max_pixels) // STRIDE * STRIDE)
        return self._balanced(height, side, smallest), self._balanced(width, side, smallest)

    def _balanced(self, length: int, largest: int, smallest: int) -> int:
        """The narrowest tile side that still needs no more tiles than ``largest`` does (less overlap wasted)."""
        if length <= largest:
            return length
        count = math.ceil((length - self.overlap) / (largest - self.overlap))
        side = math.ceil((length + (count - 1) * self.overlap) / count / STRIDE) * STRIDE
        return min(largest, max(smallest, side))


Tile = int | tuple[int, int] | AutoTile | None


def check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 BGR image, got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")


def pad_to_stride(chw: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Replicate-pad a C x H x W array at the bottom and right to multiples of ``stride`` (at least one)."""
    height, width = chw.shape[1:]
    pad_h = max(stride, math.ceil(height / stride) * stride) - height
    pad_w = max(stride, math.ceil(width / stride) * stride) - width
    if pad_h == pad_w == 0:
        return chw
    return np.pad(chw, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Origins of ``tile``-pixel tiles covering ``length``, ``tile - overlap`` apart, the last flush with the end."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def blend_weights(length: int, start: int, size: int, overlap: int, blend: str) -> np.ndarray:
    """1-D weights of one tile: 1 inside; at an edge shared with a neighbour, 0 over the outer 3/8 of
    ``overlap`` (where zero padding spoils the prediction), then a ramp to 1 over its middle quarter.

    So every pixel comes from tiles in which it lies at least 3/8 ``overlap`` from an inner edge.
    """
    weights = np.ones(size, dtype=np.float32)
    if overlap == 0:
        return weights
    margin = overlap * 3 // 8
    x = np.clip((np.arange(overlap, dtype=np.float64) + 0.5 - margin) / (overlap - 2 * margin), 0.0, 1.0)
    ramp = (x if blend == "linear" else 0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)
    if start > 0:
        weights[:overlap] = ramp
    if start + size < length:
        weights[-overlap:] = np.minimum(weights[-overlap:], ramp[::-1])
    return weights


def check_tiling(shape: tuple[int, int] | None, overlap: int, blend: str) -> None:
    if blend not in BLENDS:
        raise ValueError(f"unknown blend {blend!r}; choose one of {', '.join(BLENDS)}")
    if overlap < 0 or overlap % STRIDE:
        raise ValueError(f"overlap must be a non-negative multiple of the network stride {STRIDE}, got {overlap}")
    for side in shape or ():
        if side < STRIDE or side % STRIDE:
            raise ValueError(f"tile sides must be positive multiples of the network stride {STRIDE}, got {side}")
        if 2 * overlap > side:
            raise ValueError(f"overlap {overlap} must be at most half the tile side {side}")


def tile_shape(tile: Tile, height: int, width: int) -> tuple[int, int] | None:
    """The (height, width) of the tiles for a padded ``height`` x ``width`` image, None for one pass."""
    if tile is None:
        return None
    if isinstance(tile, AutoTile):
        return tile.shape_for(height, width)
    if isinstance(tile, int):
        return tile, tile
    return int(tile[0]), int(tile[1])


Forward = Callable[[np.ndarray], np.ndarray]  # one C x H x W array in, the net's C x H x W prediction out


def _forward(net: Any, chw: np.ndarray, input_blob: str, output_blob: str) -> np.ndarray:
    blob = net.blobs[input_blob]
    shape = (1, *chw.shape)
    if blob.data.shape != shape:
        blob.reshape(*shape)
        net.reshape()
    blob.data[0] = chw
    net.forward()
    return net.blobs[output_blob].data[0].copy()  # read back: the next forward overwrites it


def tiled(forward: Forward, chw: np.ndarray, shape: tuple[int, int] | None,
          overlap: int, blend: str) -> np.ndarray:
    """``forward`` over tiles of ``shape`` of a C x H x W array (sides multiples of the stride), blended together."""
    height, width = chw.shape[1:]
    if shape is None or (height <= shape[0] and width <= shape[1]):
        return forward(chw)
    tile_h, tile_w = min(shape[0], height), min(shape[1], width)
    total = np.zeros(chw.shape, dtype=np.float32)
    weight_sum = np.zeros((height, width), dtype=np.float32)
    for y in tile_starts(height, tile_h, overlap):
        wy = blend_weights(height, y, tile_h, overlap, blend)
        for x in tile_starts(width, tile_w, overlap):
            weights = np.outer(wy, blend_weights(width, x, tile_w, overlap, blend))
            out = forward(chw[:, y:y + tile_h, x:x + tile_w])
            total[:, y:y + tile_h, x:x + tile_w] += out * weights
            weight_sum[y:y + tile_h, x:x + tile_w] += weights
    return total / weight_sum


def caffe_forward(net: Any, input_blob: str = INPUT, output_blob: str = PREDICTION) -> Forward:
    """A Caffe net as a :data:`Forward` (reshaped to each tile's shape)."""
    return lambda chw: _forward(net, chw, input_blob, output_blob)


def predict_with(forward: Forward, bgr: np.ndarray, *, tile: Tile = None, overlap: int = DEFAULT_OVERLAP,
                 blend: str = "cosine") -> np.ndarray:
    """The prediction of ``forward`` (any engine) for a uint8 BGR image: float32 H x W x 3 BGR on the 0..1
    scale, unclipped.

    ``tile`` None runs the whole (padded) image in one pass; an int gives square tiles, a pair
    (height, width) tiles, an :class:`AutoTile` tiles picked for the image; neighbouring tiles
    share ``overlap`` pixels and are blended with ``blend`` ("cosine" or "linear") weights.
    """
    check_image(bgr)
    height, width = bgr.shape[:2]
    chw = pad_to_stride(bgr.transpose(2, 0, 1).astype(np.float32) / 255.0)
    shape = tile_shape(tile, *chw.shape[1:])
    check_tiling(shape, overlap, blend)
    out = tiled(forward, chw, shape, overlap, blend)
    return np.ascontiguousarray(out[:, :height, :width].transpose(1, 2, 0))


def predict(net: Any, bgr: np.ndarray, *, input_blob: str = INPUT, output_blob: str = PREDICTION,
            **options: Any) -> np.ndarray:
    """:func:`predict_with` a Caffe net."""
    return predict_with(caffe_forward(net, input_blob, output_blob), bgr, **options)


def to_uint8(prediction: np.ndarray) -> np.ndarray:
    """A 0..1 prediction as the uint8 image that is saved and scored: x 255, rounded, clipped."""
    return np.clip(np.rint(prediction * 255.0), 0, 255).astype(np.uint8)
