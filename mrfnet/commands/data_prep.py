"""`mrfnet data-prep`: build train/val/test LMDBs of blurred/sharp pairs for Caffe's Data layer.

Writes OUT/{train,val,test}_lmdb (records keyed %08d_<name> in a seeded random order, each LMDB
with a meta_info.jsonl line per record: source files, crop, blur and augmentation parameters) and
OUT/summary.json. The default, --source embedded, needs no download: photographs bundled with
scikit-image, scikit-learn and matplotlib, each in one split, blurred with the authors' recipe
(Gaussian then motion blur, plus noise). --source frames and --source video average consecutive sharp
frames into real motion blur, the way GOPRO was made (--average, --step, --gamma, --interpolate).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from data_prep.build import AUTO_WORKERS_MIN_PIXELS, build_dataset
from data_prep.frames import DEFAULT_AVERAGE, DEFAULT_GAMMA
from data_prep.options import BLUR_SCOPES, BuildOptions
from data_prep.sources import GOPRO_BLURS, SOURCES, Source
from mrfnet.runtime.values import fraction, non_negative_int, positive_float, positive_int

# The defaults of every option below are BuildOptions' own (data_prep.options): written once, there.
DEFAULTS = BuildOptions()
# flags whose namespace name or unit differs from BuildOptions' field
RENAMED = {"frame_step": "step"}
BUILD_FIELDS = {field.name for field in fields(BuildOptions)}


def run(args: argparse.Namespace) -> int:
    given = {RENAMED.get(name, name): value for name, value in vars(args).items()
             if RENAMED.get(name, name) in BUILD_FIELDS}
    build_dataset(BuildOptions(**{**given, "root": Path(args.root) if args.root else None,
                                  "out": Path(args.out) if args.out else None, "map_size": args.map_size << 20}))
    return 0


def _sources_help() -> str:
    """The "Sources:" list of --help, one line per registered source (so a new source lists itself)."""
    width = max(map(len, SOURCES))
    return "Sources:\n" + "\n".join(f"  {name:<{width}}  {source.help}" for name, source in SOURCES.items())


def _by_source(default: Callable[[Source], object]) -> str:
    """A per-source default as help text, sources with the same value together: "96 for embedded, 256 for gopro,
    visdrone, folder"."""
    names: dict[object, list[str]] = {}
    for name, source in SOURCES.items():
        names.setdefault(default(source), []).append(name)
    return ", ".join(f"{value} for {', '.join(group)}" for value, group in names.items())


def _add_frame_arguments(parser: argparse.ArgumentParser) -> None:
    """The frame sources' options: how consecutive frames become one blurred image (data_prep.frames)."""
    frames = f"frame sources ({', '.join(name for name, source in SOURCES.items() if source.reads_frames)})"
    parser.add_argument("--average", type=positive_int, metavar="N",
                        help=f"{frames}: consecutive frames averaged into each blurred image, odd, the middle one "
                             f"the sharp image (GOPRO: 7 to 13 frames of 240 fps; default: {DEFAULT_AVERAGE})")
    parser.add_argument("--step", dest="frame_step", type=positive_int, metavar="S",
                        help=f"{frames}: frames from one pair's first frame to the next's (default: --average, "
                             "so no frame is in two pairs)")
    parser.add_argument("--gamma", type=positive_float, metavar="G",
                        help=f"{frames}: average in linear light, frames ** G averaged then ** 1/G on [0, 1] "
                             f"(GOPRO's inverse camera response is about 2.2; 1: the plain mean; "
                             f"default: {DEFAULT_GAMMA})")
    parser.add_argument("--interpolate", type=non_negative_int, metavar="K",
                        help=f"{frames}: frames synthesised between each pair of neighbours by DIS optical flow "
                             "before averaging (2N-1 frames for K=1), for 24-60 fps footage whose averages show "
                             "separate copies of fast edges (default: 0)")


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data-prep", help="build LMDBs of blurred/sharp pairs (GOPRO, VisDrone, folders)",
                                   description=f"{__doc__}\n{_sources_help()}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    synthetic = f"synthetic sources ({', '.join(name for name, source in SOURCES.items() if source.synthetic)})"
    parser.add_argument("--source", choices=list(SOURCES), default=DEFAULTS.source, help="where pairs come from "
                        "(default: %(default)s)")
    parser.add_argument("--root", help="the dataset folder (needed by "
                        f"{', '.join(name for name, source in SOURCES.items() if source.needs_root)})")
    parser.add_argument("--out", help="output folder (default: data/<source>)")
    parser.add_argument("--gopro-blur", choices=GOPRO_BLURS, default=DEFAULTS.gopro_blur,
                        help="GOPRO's blurred folder: blur (linear, most published numbers) or blur_gamma "
                             "(DeepDeblur) (default: %(default)s)")
    parser.add_argument("--patch-size", type=positive_int, help=f"side of the square training/validation patches "
                        f"(default: {_by_source(lambda source: source.patch_size)})")
    parser.add_argument("--stride", type=positive_int, help="step between patches (default: "
                        f"{_by_source(lambda source: 'half the patch' if source.half_overlap else 'the patch')})")
    parser.add_argument("--copies", type=positive_int, default=DEFAULTS.copies,
                        help="versions of each source image, each with its own blur and augmentation "
                             "(default: %(default)s)")
    parser.add_argument("--test-copies", type=positive_int,
                        help="blur draws of each whole test image, so a test mean does not hang on one kernel "
                             "(default: --copies)")
    parser.add_argument("--max-motion", type=int, default=DEFAULTS.max_motion,
                        help=f"{synthetic}: longest motion blur drawn, in pixels (the authors' recipe: "
                             "5..30 in steps of 5; default: %(default)s)")
    parser.add_argument("--blur-per", choices=BLUR_SCOPES, default=DEFAULTS.blur_per,
                        help=f"{synthetic}: draw a new blur for every patch (default; as many kernels as "
                             "patches) or one per image copy (the authors' script); whole test images get one each")
    _add_frame_arguments(parser)
    parser.add_argument("--augment", action="store_true",
                        help="random flip, 90-degree rotation, channel permutation and saturation scaling of "
                             "training images (the paper's augmentation; off by default)")
    parser.add_argument("--test-whole", action=argparse.BooleanOptionalAction, default=DEFAULTS.test_whole,
                        help="store test images whole, not as patches, so scoring sees full images (default: on)")
    parser.add_argument("--val-fraction", type=fraction, default=DEFAULTS.val_fraction,
                        help="share of images (GOPRO: of training sequences; frames, video: of sequences or "
                             "videos) held out for validation (default: %(default)s; not embedded)")
    parser.add_argument("--test-fraction", type=fraction, default=DEFAULTS.test_fraction,
                        help="share of images held out for testing (visdrone, folder; frames, video: of sequences "
                             "or videos, unless ROOT has train/ and test/; default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=DEFAULTS.seed,
                        help="seed of splits, blur, augmentation and record order "
                        "(default: %(default)s)")
    parser.add_argument("--workers", type=positive_int,
                        help=f"worker processes; 1 works in-process (default: one per CPU ({os.cpu_count()}) for "
                             f"jobs of {AUTO_WORKERS_MIN_PIXELS // 10**6}+ megapixels, in-process below)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out (once the new one is built)")
    parser.add_argument("--map-size", type=positive_int, default=DEFAULTS.map_size >> 20,
                        help="initial LMDB map size in MiB; doubled whenever it fills (default: %(default)s)")
    parser.set_defaults(run=run)
