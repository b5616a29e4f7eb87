"""Optical flow for frame averaging (data_prep.frames): frames synthesised between two neighbours
(``--interpolate``) and the motion each pair states (meta_info's ``motion_px``), both with OpenCV's DIS flow,
which never sees a frame it could crash on (:data:`MIN_FLOW_SIDE`)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from data_prep.errors import DataError

FLOW_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
# The motion each record states (meta_info's motion_px): DIS flow's mean length between neighbouring frames,
# measured on grey frames at MOTION_SCALE of their size with the fastest preset (a statistic, not a warp).
MOTION_PRESET = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST
MOTION_SCALE = 0.5
# OpenCV's DIS flow (5.1) crashes the process on some frames under 32 pixels a side (24x96 and 31x124
# segfault with the fast presets, 12x48 with every preset): it never sees a smaller image.
MIN_FLOW_SIDE = 32


def _grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def interpolated(first: np.ndarray, second: np.ndarray, first_linear: np.ndarray, second_linear: np.ndarray,
                 count: int, flow: cv2.DISOpticalFlow | None = None) -> Iterator[np.ndarray]:
    """``count`` frames evenly spaced in time between two neighbours, in linear light.

    DIS optical flow is computed both ways on the 8-bit grey frames; the frame at time t (0 < t < 1) is
    ``(1 - t) * first(x + t * F_second->first(x)) + t * second(x + (1 - t) * F_first->second(x))``: each
    neighbour warped towards t (backward warping, bilinear, borders replicated), weighted by how close it is.
    Each flow is read at x in the other frame, the usual approximation for small, smooth motion; at occlusion
    boundaries (what a moving object uncovers or covers) one of the two terms is wrong and leaves a
    half-weight ghost.
    """
    flow = flow or cv2.DISOpticalFlow_create(FLOW_PRESET)
    grey_first, grey_second = _grey(first), _grey(second)
    forward = flow.calc(grey_first, grey_second, None)
    backward = flow.calc(grey_second, grey_first, None)
    height, width = grey_first.shape
    grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)), axis=2)
    for step in range(1, count + 1):
        t = step / (count + 1)
        from_first = grid + t * backward
        from_second = grid + (1 - t) * forward
        yield ((1 - t) * _warp(first_linear, from_first) + t * _warp(second_linear, from_second)).astype(np.float32)


def _warp(image: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return cv2.remap(image, positions[..., 0], positions[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def check_flow_size(height: int, width: int, where: Path) -> None:
    """DataError naming ``where`` for frames too small for --interpolate's optical flow (:data:`MIN_FLOW_SIDE`)."""
    if min(height, width) < MIN_FLOW_SIDE:
        raise DataError(f"--interpolate needs frames of at least {MIN_FLOW_SIDE} pixels a side (OpenCV's DIS optical "
                        f"flow); {where} is {width}x{height}")


def motion_between(first: np.ndarray, second: np.ndarray, flow: cv2.DISOpticalFlow) -> float:
    """Mean optical-flow length from ``first`` to ``second`` (uint8 BGR), in full-size pixels; NaN for frames
    too small to measure (:data:`MIN_FLOW_SIDE`)."""
    side = min(first.shape[:2])
    if side < MIN_FLOW_SIDE:
        return math.nan
    scale = MOTION_SCALE if side * MOTION_SCALE >= MIN_FLOW_SIDE else 1.0
    small = [cv2.resize(_grey(frame), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
             for frame in (first, second)]
    return float(np.linalg.norm(flow.calc(small[0], small[1], None), axis=2).mean() / scale)
