"""Offline crops: where the patches of an image start.

Patches start every ``stride`` pixels from the top-left corner, plus one flush with the bottom
and right edges when the grid stops short of them, so every pixel is in some patch and none is
invented. An image smaller than the patch in either direction has no patches: the build skips it
and counts it, it is never padded. The count depends only on (height, width) as an unordered pair,
so a 90-degree rotation (augmentation) never changes how many patches an image gives.
"""

from __future__ import annotations

import numpy as np

from data_prep.errors import DataError


def _starts(length: int, size: int, stride: int) -> list[int]:
    if length < size:
        return []
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def patch_origins(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """(y, x) of the top-left corner of every ``size`` x ``size`` patch, row by row."""
    if size < 1 or stride < 1:
        raise DataError(f"patch size and stride must be positive, got {size} and {stride}")
    return [(y, x) for y in _starts(height, size, stride) for x in _starts(width, size, stride)]


def crop(image: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    """The ``size`` x ``size`` patch at (y, x), as its own contiguous array."""
    return np.ascontiguousarray(image[y:y + size, x:x + size])
