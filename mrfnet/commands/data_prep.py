"""`mrfnet data-prep`: build train/val/test LMDBs of blurred/sharp pairs for Caffe's Data layer.

Writes OUT/{train,val,test}_lmdb (records keyed %08d_<name> in a seeded random order, each LMDB
with a meta_info.jsonl line per record: source files, crop, blur and augmentation parameters) and
OUT/summary.json. The default, --source embedded, needs no download: five photographs bundled with
scikit-image, blurred with the authors' recipe (Gaussian then motion blur, plus noise).

Sources:
  embedded  scikit-image's photographs: 3 train, 1 val, 1 test image (no --root)
  gopro     GOPRO_Large: ROOT/{train,test}/<sequence>/{blur,blur_gamma,sharp}/*.png; val = whole train sequences
  visdrone  any folder of sharp images (e.g. VisDrone2019-DET-train/images), blurred synthetically
  folder    your own pairs: ROOT/blur/ and ROOT/sharp/ matched by relative path
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from data_prep.blur import MOTION_LENGTHS
from data_prep.build import (
    AUTO_WORKERS_MIN_PIXELS,
    BLUR_SCOPES,
    EMBEDDED_PATCH,
    FILE_PATCH,
    BuildOptions,
    build_dataset,
)
from data_prep.lmdb_writer import DEFAULT_MAP_SIZE
from data_prep.sources import GOPRO_BLURS, SOURCES
from mrfnet.commands.argtypes import fraction, non_negative_int, positive_int


def run(args: argparse.Namespace) -> int:
    build_dataset(BuildOptions(
        source=args.source, root=Path(args.root) if args.root else None, out=Path(args.out) if args.out else None,
        gopro_blur=args.gopro_blur, patch_size=args.patch_size, stride=args.stride, copies=args.copies,
        test_copies=args.test_copies, blur_per=args.blur_per, max_motion=args.max_motion,
        augment=args.augment, test_whole=args.test_whole, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, seed=args.seed, workers=args.workers, force=args.force,
        map_size=args.map_size << 20))
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data-prep", help="build LMDBs of blurred/sharp pairs (GOPRO, VisDrone, folders)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=SOURCES, default="embedded", help="where pairs come from "
                        "(default: %(default)s)")
    parser.add_argument("--root", help="the dataset folder (every source but embedded)")
    parser.add_argument("--out", help="output folder (default: data/<source>)")
    parser.add_argument("--gopro-blur", choices=GOPRO_BLURS, default="blur",
                        help="GOPRO's blurred folder: blur (linear, most published numbers) or blur_gamma "
                             "(DeepDeblur) (default: %(default)s)")
    parser.add_argument("--patch-size", type=positive_int, help=f"side of the square training/validation patches "
                        f"(default: {EMBEDDED_PATCH} for embedded, {FILE_PATCH} otherwise)")
    parser.add_argument("--stride", type=positive_int,
                        help="step between patches (default: half the patch for embedded, the patch otherwise)")
    parser.add_argument("--copies", type=positive_int, default=1,
                        help="versions of each source image, each with its own blur and augmentation (default: 1)")
    parser.add_argument("--test-copies", type=positive_int,
                        help="blur draws of each whole test image, so a test mean does not hang on one kernel "
                             "(default: --copies)")
    parser.add_argument("--max-motion", type=int, default=MOTION_LENGTHS[-1],
                        help="synthetic sources: longest motion blur drawn, in pixels (the authors' recipe: "
                             "5..30 in steps of 5; default: %(default)s)")
    parser.add_argument("--blur-per", choices=BLUR_SCOPES, default="patch",
                        help="synthetic sources: draw a new blur for every patch (default; as many kernels as "
                             "patches) or one per image copy (the authors' script); whole test images get one each")
    parser.add_argument("--augment", action="store_true",
                        help="random flip, 90-degree rotation, channel permutation and saturation scaling of "
                             "training images (the paper's augmentation; off by default)")
    parser.add_argument("--test-whole", action=argparse.BooleanOptionalAction, default=True,
                        help="store test images whole, not as patches, so scoring sees full images (default: on)")
    parser.add_argument("--val-fraction", type=fraction, default=0.1,
                        help="share of images (GOPRO: of training sequences) held out for validation "
                             "(default: %(default)s; not embedded)")
    parser.add_argument("--test-fraction", type=fraction, default=0.1,
                        help="share of images held out for testing (visdrone, folder; default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of splits, blur, augmentation and record order "
                        "(default: %(default)s)")
    parser.add_argument("--workers", type=positive_int,
                        help=f"worker processes; 1 works in-process (default: one per CPU ({os.cpu_count()}) for "
                             f"jobs of {AUTO_WORKERS_MIN_PIXELS // 10**6}+ megapixels, in-process below)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out (once the new one is built)")
    parser.add_argument("--map-size", type=positive_int, default=DEFAULT_MAP_SIZE >> 20,
                        help="initial LMDB map size in MiB; doubled whenever it fills (default: %(default)s)")
    parser.set_defaults(run=run)
