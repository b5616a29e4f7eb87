"""Whole images or overlapping tiles through a deploy net, blended back; padding to the net's stride."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from tqdm import tqdm

from mrfnet.runtime.errors import InvalidValue
from netgen import INPUT, PREDICTION
from netgen.variants import STRIDE

log = logging.getLogger(__name__)

DEFAULT_OVERLAP = 128  # pixels shared by neighbouring tiles; see docs/architecture.md for the tolerance


DEFAULT_MAX_MEMORY_GB = 4.0  # budget that picks the tile size when none is given


BLENDS = ("cosine", "linear")

PROGRESS_TILES = 4  # an image in this many tiles or more gets a progress bar (a huge one runs for minutes)
WAITING_BYTES_PER_PIXEL = 16  # a partly blended pixel: three float32 sums and a float32 weight
TILE_BYTES_PER_PIXEL = 64  # float32 copies of one tile beside the net's own memory (see blend_bytes)


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
        raise InvalidValue(f"expected an H x W x 3 uint8 BGR image, got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidValue(f"empty image of shape {image.shape}")


def pad_to_stride(chw: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Replicate-pad a C x H x W array at the bottom and right to multiples of ``stride`` (at least one)."""
    height, width = chw.shape[1:]
    padded_h, padded_w = padded_size(height, width, stride)
    pad_h, pad_w = padded_h - height, padded_w - width
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
        raise InvalidValue(f"unknown blend {blend!r}; choose one of {', '.join(BLENDS)}")
    if overlap < 0 or overlap % STRIDE:
        raise InvalidValue(f"overlap must be a non-negative multiple of the network stride {STRIDE}, got {overlap}")
    for side in shape or ():
        if side < STRIDE or side % STRIDE:
            raise InvalidValue(f"tile sides must be positive multiples of the network stride {STRIDE}, got {side}")
        if 2 * overlap > side:
            raise InvalidValue(f"overlap {overlap} must be at most half the tile side {side}")


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


Sink = Callable[[int, int, np.ndarray], None]  # a finished block of the prediction and its (row, column)


def tile_input(bgr: np.ndarray, y: int, x: int, height: int, width: int) -> np.ndarray:
    """One tile of the image as the net takes it: C x H x W float32 on the 0..1 scale, replicate-padded where
    it reaches past the image (as :func:`pad_to_stride` pads the whole), converted per tile so that the
    image itself stays uint8 (a 20000x20000 photo is 1.2 GB as uint8, 4.8 GB as float32)."""
    part = bgr[y:y + height, x:x + width]
    short_h, short_w = height - part.shape[0], width - part.shape[1]
    if short_h or short_w:
        part = np.pad(part, ((0, short_h), (0, short_w), (0, 0)), mode="edge")
    chw = part.transpose(2, 0, 1).astype(np.float32, order="C")
    chw /= 255.0
    return chw


def _cuts(starts: list[int], size: int) -> tuple[list[tuple[int, int]], list[list[int]], list[int]]:
    """Along one axis: the segments between tile edges, each tile's segments, and each segment's last tile."""
    edges = sorted({*starts, *(start + size for start in starts)})
    segments = list(pairwise(edges))
    covering = [[k for k, (a, b) in enumerate(segments) if start <= a and b <= start + size] for start in starts]
    last = [max(i for i, seg in enumerate(covering) if k in seg) for k in range(len(segments))]
    return segments, covering, last


def tiled(forward: Forward, bgr: np.ndarray, shape: tuple[int, int] | None, overlap: int, blend: str,
          sink: Sink, *, progress: str | None = None) -> None:
    """``forward`` over tiles of ``shape`` of the padded uint8 ``bgr``, blended; each block of the prediction
    goes to ``sink`` as soon as no later tile touches it, cropped to the image.

    Tiles run row by row, and the image is cut into cells between tile edges: a cell sums its tiles'
    weighted predictions (in the order a whole-image accumulator would, so the result is the same bits)
    and is finished by its last tile. So what is held beside the net is the cells still waiting for the
    next row of tiles (about ``overlap`` rows of the image) and one tile's copies
    (:func:`blend_bytes`), not float32 copies of the whole image. ``progress`` labels a bar over the tiles.
    """
    height, width = bgr.shape[:2]
    padded_h, padded_w = padded_size(height, width)
    if shape is None or (padded_h <= shape[0] and padded_w <= shape[1]):
        sink(0, 0, forward(tile_input(bgr, 0, 0, padded_h, padded_w))[:, :height, :width])
        return
    tile_h, tile_w = min(shape[0], padded_h), min(shape[1], padded_w)
    ys, xs = tile_starts(padded_h, tile_h, overlap), tile_starts(padded_w, tile_w, overlap)
    rows, row_cells, last_row = _cuts(ys, tile_h)
    cols, col_cells, last_col = _cuts(xs, tile_w)
    waiting: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    bar = tqdm(total=len(ys) * len(xs), desc=progress, unit="tile", leave=False,
               disable=progress is None or len(ys) * len(xs) < PROGRESS_TILES)
    with bar:
        for i, y in enumerate(ys):
            wy = blend_weights(padded_h, y, tile_h, overlap, blend)
            for j, x in enumerate(xs):
                weights = np.outer(wy, blend_weights(padded_w, x, tile_w, overlap, blend))
                weighted = forward(tile_input(bgr, y, x, tile_h, tile_w)) * weights
                for r in row_cells[i]:
                    top, bottom = rows[r]
                    if top >= height:
                        continue  # all padding
                    for c in col_cells[j]:
                        left, right = cols[c]
                        if left >= width:
                            continue
                        area = (slice(top - y, bottom - y), slice(left - x, right - x))
                        total, weight_sum = waiting.setdefault(
                            (r, c), (np.zeros((weighted.shape[0], bottom - top, right - left), np.float32),
                                     np.zeros((bottom - top, right - left), np.float32)))
                        total += weighted[(slice(None), *area)]
                        weight_sum += weights[area]
                        if (last_row[r], last_col[c]) == (i, j):
                            del waiting[r, c]
                            sink(top, left, (total / weight_sum)[:, :height - top, :width - left])
                bar.update()


def tile_count(height: int, width: int, shape: tuple[int, int] | None, overlap: int) -> int:
    """How many tiles :func:`tiled` runs for a ``height`` x ``width`` image."""
    if shape is None:
        return 1
    padded_h, padded_w = padded_size(height, width)
    return (len(tile_starts(padded_h, min(shape[0], padded_h), overlap))
            * len(tile_starts(padded_w, min(shape[1], padded_w), overlap)))


def padded_size(height: int, width: int, stride: int = STRIDE) -> tuple[int, int]:
    """The size :func:`pad_to_stride` pads an image of ``height`` x ``width`` to."""
    return max(stride, math.ceil(height / stride) * stride), max(stride, math.ceil(width / stride) * stride)


def blend_bytes(height: int, width: int, shape: tuple[int, int] | None, overlap: int) -> int:
    """Bytes :func:`tiled` holds beside the net at most for a ``height`` x ``width`` image: the cells waiting
    for the next row of tiles (3 float32 sums and a weight per pixel) and one tile's float32 copies (its
    input, the prediction, the weighted prediction, the weights, a finished block and its rounding)."""
    padded_h, padded_w = padded_size(height, width)
    tile_h, tile_w = (padded_h, padded_w) if shape is None else (min(shape[0], padded_h), min(shape[1], padded_w))
    ys = tile_starts(padded_h, tile_h, overlap)
    strip = max((y + tile_h - below for y, below in pairwise(ys)), default=0)
    return WAITING_BYTES_PER_PIXEL * (strip * padded_w + tile_h * tile_w) + TILE_BYTES_PER_PIXEL * tile_h * tile_w


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
    out = np.empty(bgr.shape, np.float32)

    def keep(y: int, x: int, block: np.ndarray) -> None:
        out[y:y + block.shape[1], x:x + block.shape[2]] = block.transpose(1, 2, 0)

    tiled(forward, bgr, checked_shape(tile, bgr, overlap, blend), overlap, blend, keep)
    return out


def deblur_with(forward: Forward, bgr: np.ndarray, sink: Sink, *, tile: Tile = None,
                overlap: int = DEFAULT_OVERLAP, blend: str = "cosine", progress: str | None = None) -> None:
    """:func:`predict_with` as the uint8 image that is saved (:func:`to_uint8`), block by block into ``sink``
    (row, column, an h x w x 3 uint8 block), so that no float32 copy of the whole image is ever made;
    ``progress`` labels a bar over the tiles (shown from :data:`PROGRESS_TILES` tiles)."""
    check_image(bgr)
    tiled(forward, bgr, checked_shape(tile, bgr, overlap, blend), overlap, blend,
          lambda y, x, block: sink(y, x, to_uint8(block.transpose(1, 2, 0))), progress=progress)


def checked_shape(tile: Tile, bgr: np.ndarray, overlap: int, blend: str) -> tuple[int, int] | None:
    """The tile shape for ``bgr`` (:func:`tile_shape` of its padded size), checked (:func:`check_tiling`)."""
    shape = tile_shape(tile, *padded_size(*bgr.shape[:2]))
    check_tiling(shape, overlap, blend)
    return shape


def predict(net: Any, bgr: np.ndarray, *, input_blob: str = INPUT, output_blob: str = PREDICTION,
            **options: Any) -> np.ndarray:
    """:func:`predict_with` a Caffe net."""
    return predict_with(caffe_forward(net, input_blob, output_blob), bgr, **options)


def to_uint8(prediction: np.ndarray) -> np.ndarray:
    """A 0..1 prediction as the uint8 image that is saved and scored: x 255, rounded, clipped."""
    return np.clip(np.rint(prediction * 255.0), 0, 255).astype(np.uint8)
