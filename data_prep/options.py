"""What a data-prep build depends on (``mrfnet data-prep``'s options), with each source's defaults filled in
and every number checked before any image is read."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from data_prep.blur import MOTION_LENGTHS, motion_lengths
from data_prep.errors import DataError
from data_prep.frames import DEFAULT_AVERAGE, DEFAULT_GAMMA, FrameSettings
from data_prep.lmdb_writer import DEFAULT_MAP_SIZE
from data_prep.sources import SOURCES, get_source

# Synthetic blur: one kernel per patch (default) or one per image copy, as the authors' script did.
BLUR_SCOPES = ("patch", "image")


@dataclass(frozen=True)
class BuildOptions:
    """Everything a build depends on; ``None`` fields take the source's defaults (its entry in
    data_prep.sources.SOURCES, see :meth:`resolved`)."""

    source: str = "embedded"
    root: Path | None = None
    out: Path | None = None  # default data/<source>
    gopro_blur: str = "blur"
    patch_size: int | None = None
    stride: int | None = None
    copies: int = 1
    test_copies: int | None = None  # blur draws of each whole test image; None: ``copies``
    blur_per: str = "patch"
    max_motion: int = MOTION_LENGTHS[-1]
    augment: bool = False
    test_whole: bool = True
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    # frame sources (frames, video) only; None: their defaults (data_prep.frames.FrameSettings)
    average: int | None = None
    step: int | None = None
    gamma: float | None = None
    interpolate: int | None = None
    workers: int | None = None  # None: one per CPU for large jobs, in-process for small ones
    force: bool = False
    map_size: int = DEFAULT_MAP_SIZE

    def resolved(self) -> BuildOptions:
        """A copy with the defaults filled in and the numbers checked."""
        source = get_source(self.source)
        patch = self.patch_size or source.patch_size
        stride = self.stride or (patch // 2 if source.half_overlap else patch)
        motion_lengths(self.max_motion)  # checks it
        for label, value in (("patch size", patch), ("stride", stride), ("copies", self.copies),
                             ("test copies", self.test_copies),
                             ("workers", self.workers), ("map size", self.map_size)):
            if value is not None and value < 1:
                raise DataError(f"{label} must be positive, got {value}")
        if self.blur_per not in BLUR_SCOPES:
            raise DataError(f"blur_per must be one of {', '.join(BLUR_SCOPES)}, got {self.blur_per!r}")
        frames = {"average": self.average, "step": self.step, "gamma": self.gamma, "interpolate": self.interpolate}
        if source.reads_frames:
            frames = FrameSettings(DEFAULT_AVERAGE if self.average is None else self.average, self.step,
                                   DEFAULT_GAMMA if self.gamma is None else self.gamma,
                                   0 if self.interpolate is None else self.interpolate).checked().record()
        elif any(value is not None for value in frames.values()):
            raise DataError(f"--average, --step, --gamma and --interpolate are for the frame sources "
                            f"({', '.join(name for name, spec in SOURCES.items() if spec.reads_frames)}), "
                            f"not {self.source}")
        out = Path(self.out) if self.out is not None else Path("data") / self.source
        root = Path(self.root) if self.root is not None else None
        return BuildOptions(**{**asdict(self), "out": out, "root": root, "patch_size": patch, "stride": stride,
                               **frames})

    @property
    def frames(self) -> FrameSettings | None:
        """The frame sources' settings (of a resolved copy); None for the other sources."""
        return None if self.average is None else FrameSettings(self.average, self.step, self.gamma, self.interpolate)
