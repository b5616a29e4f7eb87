"""What a data-prep build depends on (``mrfnet data-prep``'s options, each flag generated from its field here),
with each source's defaults filled in and every number checked before any image is read."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from data_prep.blur import MOTION_LENGTHS, motion_lengths
from data_prep.errors import DataError
from data_prep.frames import DEFAULT_AVERAGE, DEFAULT_GAMMA, FrameSettings
from data_prep.lmdb_writer import DEFAULT_MAP_SIZE
from data_prep.option_fields import fraction, non_negative_int, option, positive_float, positive_int
from data_prep.sources import GOPRO_BLURS, SOURCES, Source, get_source

# Synthetic blur: one kernel per patch (default) or one per image copy, as the authors' script did.
BLUR_SCOPES = ("patch", "image")
# With --workers left out, worker processes start only for jobs of at least this many source pixels:
# each costs about a second to start (it imports Caffe and OpenCV), and OpenCV already spreads the
# blur of one image over the cores, so a small job (the embedded set: 1.3 megapixels) runs faster
# in-process.
AUTO_WORKERS_MIN_PIXELS = 50_000_000


def _sources(has: Callable[[Source], bool]) -> str:
    """The registered sources with a property, for help text ("gopro, visdrone, folder")."""
    return ", ".join(name for name, source in SOURCES.items() if has(source))


def _by_source(default: Callable[[Source], object]) -> str:
    """A per-source default as help text, sources with the same value together: "96 for embedded, 256 for gopro,
    visdrone, folder"."""
    names: dict[object, list[str]] = {}
    for name, source in SOURCES.items():
        names.setdefault(default(source), []).append(name)
    return ", ".join(f"{value} for {', '.join(group)}" for value, group in names.items())


def _default_stride(source: Source) -> str:
    return "half the patch" if source.half_overlap else "the patch"


def _synthetic(text: str) -> Callable[[], str]:
    """The help of an option of the synthetic sources, naming them when --help is made (so a source registered
    later lists itself)."""
    return lambda: f"synthetic sources ({_sources(lambda source: source.synthetic)}): {text}"


def _frames(text: str) -> Callable[[], str]:
    """The help of an option of the frame sources, naming them when --help is made."""
    return lambda: f"frame sources ({_sources(lambda source: source.reads_frames)}): {text}"


def _mebibytes(text: str) -> int:
    """--map-size is given in MiB (a positive number of them) and stored in bytes."""
    return positive_int(text) << 20


@dataclass(frozen=True)
class BuildOptions:
    """Everything a build depends on, each field a flag of ``mrfnet data-prep`` (data_prep.option_fields; help
    that names sources is made when --help is); ``None`` fields take the source's defaults (its entry in
    data_prep.sources.SOURCES, see :meth:`resolved`)."""

    source: str = option("embedded", "where pairs come from", choices=SOURCES)
    root: Path | None = option(None, lambda: f"the dataset folder (needed by "
                                             f"{_sources(lambda source: source.needs_root)})", parse=Path)
    out: Path | None = option(None, "output folder (default: data/<source>)", parse=Path)
    gopro_blur: str = option("blur", "GOPRO's blurred folder: blur (linear, most published numbers) or blur_gamma "
                                     "(DeepDeblur)", choices=GOPRO_BLURS)
    patch_size: int | None = option(None, lambda: "side of the square training/validation patches (default: "
                                                  f"{_by_source(lambda source: source.patch_size)})",
                                    parse=positive_int)
    stride: int | None = option(None, lambda: f"step between patches (default: {_by_source(_default_stride)})",
                                parse=positive_int)
    copies: int = option(1, "versions of each source image, each with its own blur and augmentation",
                         parse=positive_int)
    test_copies: int | None = option(None, "blur draws of each whole test image, so a test mean does not hang on "
                                           "one kernel (default: --copies)", parse=positive_int)
    min_motion: int = option(MOTION_LENGTHS[0], _synthetic("shortest motion blur drawn, in pixels: with "
                                                           "--max-motion the same, a test set of one blur length "
                                                           "(default: %(default)s)"), parse=int)
    max_motion: int = option(MOTION_LENGTHS[-1], _synthetic("longest motion blur drawn, in pixels (the authors' "
                                                            "recipe: 5..30 in steps of 5; default: %(default)s)"),
                             parse=int)
    blur_per: str = option("patch", _synthetic("draw a new blur for every patch (default; as many kernels as "
                                               "patches) or one per image copy (the authors' script); whole test "
                                               "images get one each"), choices=BLUR_SCOPES)
    # frame sources (frames, video) only; None: their defaults (data_prep.frames.FrameSettings)
    average: int | None = option(None, _frames("consecutive frames averaged into each blurred image, odd, the "
                                               "middle one the sharp image (GOPRO: 7 to 13 frames of 240 fps; "
                                               f"default: {DEFAULT_AVERAGE})"), parse=positive_int, metavar="N")
    step: int | None = option(None, _frames("frames from one pair's first frame to the next's (default: "
                                            "--average, so no frame is in two pairs)"), parse=positive_int,
                              metavar="S")
    gamma: float | None = option(None, _frames("average in linear light, frames ** G averaged then ** 1/G on "
                                               "[0, 1] (GOPRO's inverse camera response is about 2.2; 1: the plain "
                                               f"mean; default: {DEFAULT_GAMMA})"), parse=positive_float, metavar="G")
    interpolate: int | None = option(None, _frames("frames synthesised between each pair of neighbours by DIS "
                                                   "optical flow before averaging (2N-1 frames for K=1), for 24-60 "
                                                   "fps footage whose averages show separate copies of fast edges "
                                                   "(default: 0)"), parse=non_negative_int, metavar="K")
    augment: bool = option(False, "random flip, 90-degree rotation, channel permutation and saturation scaling of "
                                  "training images (the paper's augmentation; off by default)")
    test_whole: bool = option(True, "store test images whole, not as patches, so scoring sees full images "
                                    "(default: on)")
    val_fraction: float = option(0.1, "share of images (GOPRO: of training sequences; frames, video: of sequences "
                                      "or videos) held out for validation (default: %(default)s; not embedded)",
                                 parse=fraction)
    test_fraction: float = option(0.1, "share of images held out for testing (visdrone, folder; frames, video: of "
                                       "sequences or videos, unless ROOT has train/ and test/; default: %(default)s)",
                                  parse=fraction)
    seed: int = option(0, "seed of splits, blur, augmentation and record order", parse=non_negative_int)
    workers: int | None = option(None, "worker processes; 1 works in-process (default: one per CPU "
                                       f"({os.cpu_count()}) for jobs of {AUTO_WORKERS_MIN_PIXELS // 10**6}+ "
                                       "megapixels, in-process below)", parse=positive_int)
    force: bool = option(False, "replace an existing --out (once the new one is built)")
    map_size: int = option(DEFAULT_MAP_SIZE, "initial LMDB map size in MiB; doubled whenever it fills (default: "
                                             f"{DEFAULT_MAP_SIZE >> 20})", parse=_mebibytes)

    def resolved(self) -> BuildOptions:
        """A copy with the defaults filled in and the numbers checked."""
        source = get_source(self.source)
        patch = self.patch_size or source.patch_size
        stride = self.stride or (patch // 2 if source.half_overlap else patch)
        motion_lengths(self.max_motion, self.min_motion)  # checks them
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
