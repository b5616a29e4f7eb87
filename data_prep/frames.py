"""Real motion blur from sharp frames, the way GOPRO was made: consecutive frames averaged in linear light.

A :class:`Window` is one blurred/sharp pair to be: ``average`` (N, odd) consecutive frames of a sequence
folder or a video, the middle one the sharp image. :meth:`Window.read` decodes them, optionally synthesises
``interpolate`` (K) frames between each pair of neighbours with OpenCV's DIS optical flow (data_prep.flow),
and averages the N + (N - 1) K frames in linear light (each frame ``(x / 255) ** gamma``, the mean raised to
``1 / gamma``; ``gamma`` 1 is the plain mean). The sources (data_prep.sources: ``frames`` and ``video``) find
sequences and videos and check them before any pixels are averaged: :func:`sequence_frames` and :func:`check_sequence`
read only image headers; data_prep.videos.scan_video decodes a video once, counting its frames and
reading their timestamps, so a truncated video, one whose frame size changes or one with a variable
frame rate is refused before the build starts (docs/architecture.md, "Frame averaging").

Everything refused is a :class:`~data_prep.errors.DataError` naming the file.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from data_prep.errors import DataError, MissingData
from data_prep.flow import FLOW_PRESET, MOTION_PRESET, interpolated, motion_between
from data_prep.images import IMAGE_SUFFIXES, ImageError, image_size, read_image, warn_left_out
from data_prep.videos import frame_size, open_video

log = logging.getLogger(__name__)

DEFAULT_AVERAGE = 7  # GOPRO averaged 7 to 13 frames of 240 fps footage
DEFAULT_GAMMA = 2.2  # GOPRO's inverse camera response, approximated by a gamma curve


@dataclass(frozen=True)
class FrameSettings:
    """How frames become pairs: ``average`` frames per pair (odd), a pair every ``step`` frames (None: every
    ``average``, so no frame is in two pairs), ``gamma`` of the averaging, ``interpolate`` frames synthesised
    between each pair of neighbours."""

    average: int = DEFAULT_AVERAGE
    step: int | None = None
    gamma: float = DEFAULT_GAMMA
    interpolate: int = 0

    def checked(self) -> FrameSettings:
        """A copy with ``step`` filled in; DataError for a setting that makes no sense."""
        if self.average < 3 or self.average % 2 == 0:
            raise DataError(f"--average must be odd and at least 3 (the middle frame is the sharp one), "
                            f"got {self.average}")
        if self.step is not None and self.step < 1:
            raise DataError(f"--step must be positive, got {self.step}")
        if not np.isfinite(self.gamma) or self.gamma <= 0:
            raise DataError(f"--gamma must be above 0, got {self.gamma}")
        if self.interpolate < 0:
            raise DataError(f"--interpolate must be 0 or more, got {self.interpolate}")
        return FrameSettings(self.average, self.step or self.average, float(self.gamma), self.interpolate)

    @property
    def averaged(self) -> int:
        """How many frames each blurred image averages: the N read and the K synthesised in each of N - 1 gaps."""
        return self.average + (self.average - 1) * self.interpolate

    def record(self) -> dict[str, Any]:
        return {"average": self.average, "step": self.step, "gamma": self.gamma, "interpolate": self.interpolate}


def window_starts(frames: int, settings: FrameSettings, cuts: Iterable[int] = ()) -> list[int]:
    """The first frame of each pair of a sequence of ``frames`` frames. ``cuts``: frames that start a new shot
    (data_prep.videos.find_cuts); each shot is windowed from its own first frame, and no window spans a cut."""
    bounds = [0, *sorted(cut for cut in set(cuts) if 0 < cut < frames), frames]
    step = settings.step or settings.average
    return [start for first, end in itertools.pairwise(bounds)
            for start in range(first, end - settings.average + 1, step)]


# --- frame folders ----------------------------------------------------------------------------------------------------

def natural_key(name: str) -> list[Any]:
    """Sort key putting frame9.png before frame10.png (numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def sequence_frames(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, in natural order (no subfolders: each is a sequence of its own)."""
    files = [path for path in folder.iterdir() if path.is_file()]
    warn_left_out(folder, files)
    return sorted((path for path in files if path.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_key(p.name))


def find_sequences(base: Path) -> dict[str, list[Path]]:
    """Every folder under ``base`` that holds frames directly, by its path relative to ``base``; DataError if
    ``base`` itself holds frames (a sequence must be a folder of its own, the unit of the splits) or none does."""
    if not base.is_dir():
        raise MissingData(f"no folder {base}")
    if sequence_frames(base):
        raise DataError(f"frames directly in {base}: put each sequence in a folder of its own ({base}/<sequence>/), "
                        "since the splits take whole sequences")
    found = {}
    for folder in sorted(path for path in base.rglob("*") if path.is_dir()):
        frames = sequence_frames(folder)
        if frames:
            found[folder.relative_to(base).as_posix()] = frames
    if not found:
        raise DataError(f"no sequence folders of frames ({', '.join(IMAGE_SUFFIXES)}) under {base}")
    return found


def check_sequence(folder: Path, frames: list[Path], settings: FrameSettings) -> tuple[int, int]:
    """(height, width) shared by every frame of a sequence, from the file headers; DataError naming the
    folder or file for a sequence shorter than ``settings.average`` or frames of different sizes."""
    if len(frames) < settings.average:
        raise DataError(f"sequence {folder} has {len(frames)} frame(s), fewer than the {settings.average} that "
                        "--average needs")
    size = image_size(frames[0])
    for path in frames[1:]:
        if image_size(path) != size:
            raise ImageError(f"frame {path} is {frame_size(image_size(path))} but {frames[0].name} before it "
                             f"is {frame_size(size)}: a sequence mixes frame sizes")
    return size


# --- averaging --------------------------------------------------------------------------------------------------------

def to_linear(frame: np.ndarray, gamma: float) -> np.ndarray:
    """uint8 values -> linear light on the same 0..255 scale (float32; exactly the values when gamma is 1)."""
    values = frame.astype(np.float32)
    if gamma == 1:
        return values
    return (np.power(values / 255.0, gamma) * 255.0).astype(np.float32)


def from_linear(linear: np.ndarray, gamma: float) -> np.ndarray:
    """Linear light on the 0..255 scale -> uint8, rounded to the nearest value."""
    values = np.clip(linear, 0.0, 255.0)
    if gamma != 1:
        values = np.power(values / 255.0, 1.0 / gamma) * 255.0
    return np.rint(values).astype(np.uint8)


class Averaged(NamedTuple):
    """What :func:`average_frames` made: the blurred image, how many frames it averages, and the mean motion
    between neighbouring frames (pixels per frame, :func:`motion_between`)."""

    image: np.ndarray
    count: int
    motion_px: float


def average_frames(frames: Iterable[np.ndarray], gamma: float, interpolate: int = 0) -> Averaged:
    """The blurred image of consecutive uint8 BGR frames, how many frames it averages and their motion.

    Frames are taken one at a time (memory: a few frames, not N + (N - 1) K): each is converted to linear
    light and added to a float64 sum; with ``interpolate`` K, the K frames between it and the previous one
    are synthesised (:func:`interpolated`) and added too. With gamma 1 the result is exactly the rounded mean.
    """
    total = None
    count = 0
    motions: list[float] = []
    previous: tuple[np.ndarray, np.ndarray] | None = None
    flow = cv2.DISOpticalFlow_create(FLOW_PRESET) if interpolate else None
    motion_flow = cv2.DISOpticalFlow_create(MOTION_PRESET)
    for frame in frames:
        linear = to_linear(frame, gamma)
        if total is None:
            total = np.zeros(linear.shape, np.float64)
        if previous is not None:
            motions.append(motion_between(previous[0], frame, motion_flow))
            if interpolate:
                for between in interpolated(previous[0], frame, previous[1], linear, interpolate, flow):
                    total += between
                    count += 1
        total += linear
        count += 1
        previous = (frame, linear)
    if total is None:
        raise DataError("no frames to average")
    return Averaged(from_linear(total / count, gamma), count, float(np.mean(motions)) if motions else 0.0)


def motion_stats(motions: Iterable[float], average: int) -> dict[str, dict[str, float]]:
    """Mean, median and 90th percentile of the windows' motion (pixels per frame) and of their blur length,
    (N - 1) x motion: what summary.json states of a frame source's split."""
    values = np.asarray([value for value in motions if value is not None and math.isfinite(value)], np.float64)
    if not values.size:
        return {}

    def stats(numbers: np.ndarray) -> dict[str, float]:
        return {"mean": round(float(numbers.mean()), 3), "median": round(float(np.median(numbers)), 3),
                "p90": round(float(np.percentile(numbers, 90)), 3)}

    return {"motion_px": stats(values), "blur_px": stats(values * (average - 1))}


# --- one pair ---------------------------------------------------------------------------------------------------------

class WindowPixels(NamedTuple):
    """One window read: the blurred and sharp images, the conversions its frame files needed (data_prep.images)
    and the mean motion between its neighbouring frames (pixels per frame)."""

    blurred: np.ndarray
    sharp: np.ndarray
    notes: list[str]
    motion_px: float


@dataclass(frozen=True)
class Window:
    """The frames of one pair: ``settings.average`` consecutive frames from frame ``start`` (counted from 0) of a
    sequence folder (``files``: the window's frame files, in order) or of a video (``video``, its nominal
    ``fps``, and the timestamp the scan saw at ``start``, which checks the seek). Picklable: the build's worker
    processes read it."""

    settings: FrameSettings
    start: int
    height: int
    width: int
    sequence: Path | None = None
    files: tuple[str, ...] = ()
    video: Path | None = None
    fps: float = 0.0
    start_ms: float | None = None

    @property
    def indices(self) -> list[int]:
        return list(range(self.start, self.start + self.settings.average))

    @property
    def sharp_index(self) -> int:
        return self.start + self.settings.average // 2

    @property
    def origin(self) -> Path:
        """The file the frames come from: the sequence's middle (sharp) frame, or the video."""
        return self.video if self.video is not None else self.sequence / self.files[self.settings.average // 2]

    def read(self) -> WindowPixels:
        """The pair (both H x W x 3 uint8 BGR), the conversions its frame files needed and its motion."""
        notes: list[str] = []
        sharp: list[np.ndarray] = []

        def frames() -> Iterator[np.ndarray]:
            for index, frame in zip(self.indices, self._frames(notes), strict=True):
                if index == self.sharp_index:
                    sharp.append(frame)
                yield frame

        averaged = average_frames(frames(), self.settings.gamma, self.settings.interpolate)
        if averaged.count != self.settings.averaged:
            raise DataError(f"{self.origin}: averaged {averaged.count} frames, not {self.settings.averaged}")
        return WindowPixels(averaged.image, sharp[0], sorted(set(notes)), averaged.motion_px)

    def _frames(self, notes: list[str]) -> Iterator[np.ndarray]:
        if self.video is not None:
            yield from self._video_frames()
            return
        for name in self.files:
            path = self.sequence / name
            frame, converted = read_image(path)
            if frame.shape[:2] != (self.height, self.width):
                raise ImageError(f"frame {path} decodes to {frame_size(frame.shape[:2])} pixels but the sequence's "
                                 f"frames are {frame_size((self.height, self.width))}")
            notes += converted
            yield frame

    def _video_frames(self) -> Iterator[np.ndarray]:
        capture, frame = self._first_frame()
        try:
            for index in self.indices:
                if index > self.start:
                    ok, frame = capture.read()
                    if not ok:
                        raise DataError(f"video {self.video}: frame {index} does not decode (damaged since it was "
                                        "checked?)")
                if frame.shape[:2] != (self.height, self.width):
                    raise DataError(f"video {self.video} changes frame size at frame {index}: "
                                    f"{frame_size(frame.shape[:2])}, not {frame_size((self.height, self.width))}")
                yield frame
        finally:
            capture.release()

    def _first_frame(self) -> tuple[cv2.VideoCapture, np.ndarray]:
        """The video opened and its frame ``start`` read. OpenCV seeks by frame number; the frame's timestamp is
        checked against the scan's, and where the seek missed (a codec whose seeks land on key frames) the
        video is read again from its start, frame by frame."""
        capture = open_video(self.video)
        if self.start:
            capture.set(cv2.CAP_PROP_POS_FRAMES, self.start)
        ok, frame = capture.read()
        if ok and (self.start == 0 or self.start_ms is None or self.fps <= 0
                   or abs(capture.get(cv2.CAP_PROP_POS_MSEC) - self.start_ms) < 500.0 / self.fps):
            return capture, frame
        log.debug("%s: seeking to frame %d missed; reading from the start", self.video, self.start)
        capture.release()
        capture = open_video(self.video)
        ok = all(capture.grab() for _ in range(self.start))
        if ok:
            ok, frame = capture.read()
        if not ok:
            capture.release()
            raise DataError(f"video {self.video}: frame {self.start} does not decode (damaged since it was checked?)")
        return capture, frame

    def meta(self, motion_px: float | None = None) -> dict[str, Any]:
        """What the record's meta_info line says of its frames: source file(s), frame indices, N, gamma, K, and
        (given the window's measured ``motion_px``) its motion and blur length: ``blur_px``, the path a point
        travels over the N frames, (N - 1) x motion_px."""
        where = ({"video": str(self.video), "fps": self.fps} if self.video is not None
                 else {"sequence": str(self.sequence), "files": list(self.files)})
        motion = {} if motion_px is None else {
            "motion_px": round(motion_px, 3) if math.isfinite(motion_px) else None,
            "blur_px": round(motion_px * (self.settings.average - 1), 3) if math.isfinite(motion_px) else None}
        return {"source": "video" if self.video is not None else "frames", **where, "frames": self.indices,
                "sharp_frame": self.sharp_index, **self.settings.record(), "averaged_frames": self.settings.averaged,
                **motion}
