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

from data_prep.build import build_dataset
from data_prep.options import BuildOptions
from data_prep.sources import SOURCES
from mrfnet.runtime.options import add_arguments, resolve


def run(args: argparse.Namespace) -> int:
    build_dataset(resolve(BuildOptions, args))
    return 0


def _sources_help() -> str:
    """The "Sources:" list of --help, one line per registered source (so a new source lists itself)."""
    width = max(map(len, SOURCES))
    return "Sources:\n" + "\n".join(f"  {name:<{width}}  {source.help}" for name, source in SOURCES.items())


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data-prep", help="build LMDBs of blurred/sharp pairs (GOPRO, VisDrone, folders)",
                                   description=f"{__doc__}\n{_sources_help()}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, BuildOptions)  # every flag, default and help: BuildOptions' fields (data_prep.options)
    parser.set_defaults(run=run)
