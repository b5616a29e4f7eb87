"""`mrfnet time`: seconds and memory per variant and size."""

from __future__ import annotations

import argparse
from pathlib import Path

from data_prep.atomic import write_json_atomic, write_text_atomic
from mrfnet.analyze.options import TimeOptions
from mrfnet.analyze.timing import time_variants
from mrfnet.commands.options import add_variants_argument, check_writable
from mrfnet.runtime.errors import InvalidValue
from mrfnet.runtime.options import add_arguments, resolve
from netgen import VARIANTS


def _check_out(out: Path | None) -> None:
    """Refuse an --out that cannot be written before the minutes of timing, not after."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise InvalidValue(f"--out {out} is a file; give a folder for timing.md and timing.json")
    check_writable("--out", out)


def run(args: argparse.Namespace) -> int:
    options = resolve(TimeOptions, args)
    _check_out(options.out)
    variants = args.variants or list(VARIANTS)
    report = time_variants(variants, sizes=options.sizes, repeats=options.repeats, warmup=options.warmup,
                           memory_batches=options.memory_batches, memory_side=options.memory_side,
                           max_memory_gb=options.max_memory_gb, tile_memory_gb=options.tile_memory_gb,
                           overlap=options.overlap, caffe_time=not options.no_caffe_time, gpu=options.gpu,
                           engine=options.engine)
    markdown = report.to_markdown()
    print(markdown)
    if options.out:
        options.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(options.out / "timing.md", markdown)
        write_json_atomic(options.out / "timing.json", report.to_json())
        print(f"written to {options.out / 'timing.md'} and timing.json")
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("time", help="inference time and training memory of each variant (Tables III, IV)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_variants_argument(parser)
    add_arguments(parser, TimeOptions)
    parser.set_defaults(run=run)
