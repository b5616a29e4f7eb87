"""`mrfnet time`: seconds and memory per variant and size."""

from __future__ import annotations

import argparse
from pathlib import Path

from data_prep.atomic import write_json_atomic, write_text_atomic
from mrfnet.analyze.timing import DEFAULT_MEMORY_BATCHES, DEFAULT_MEMORY_SIDE, time_variants
from mrfnet.commands.options import add_variants_argument, check_writable
from mrfnet.export.engines import ENGINES
from mrfnet.infer.tiling import DEFAULT_OVERLAP
from mrfnet.runtime.errors import InvalidValue
from mrfnet.runtime.values import non_negative_int, positive_float, positive_int
from netgen import VARIANTS
from netgen.sizes import parse_sizes


def _batches(text: str) -> list[int]:
    """Comma-separated positive batch sizes, checked before any timing work."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes are positive integers, got {text!r}")
    return values


def _sizes(text: str) -> list[tuple[int, int]]:
    try:
        return parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_out(out: Path | None) -> None:
    """Refuse an --out that cannot be written before the minutes of timing, not after."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise InvalidValue(f"--out {out} is a file; give a folder for timing.md and timing.json")
    check_writable("--out", out)


def run(args: argparse.Namespace) -> int:
    _check_out(args.out)
    variants = args.variants or list(VARIANTS)
    report = time_variants(variants, sizes=args.sizes, repeats=args.repeats, warmup=args.warmup,
                           memory_batches=args.memory_batches, memory_side=args.memory_side,
                           max_memory_gb=args.max_memory_gb, tile_memory_gb=args.tile_memory_gb,
                           overlap=args.overlap, caffe_time=not args.no_caffe_time, gpu=args.gpu,
                           engine=args.engine)
    markdown = report.to_markdown()
    print(markdown)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out / "timing.md", markdown)
        write_json_atomic(args.out / "timing.json", report.to_json())
        print(f"written to {args.out / 'timing.md'} and timing.json")
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("time", help="inference time and training memory of each variant (Tables III, IV)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_variants_argument(parser)
    parser.add_argument("--sizes", type=_sizes, default="256x256,1280x720",
                        help="inference sizes, WIDTHxHEIGHT, comma-separated (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed passes per size (default: %(default)s)")
    parser.add_argument("--warmup", type=non_negative_int, default=1,
                        help="untimed passes first (default: %(default)s)")
    parser.add_argument("--memory-batches", type=_batches, default=list(DEFAULT_MEMORY_BATCHES),
                        help="batch sizes of the training-memory table (default: 1,8,16)")
    parser.add_argument("--memory-side", type=positive_int, default=DEFAULT_MEMORY_SIDE,
                        help="square input side of the training-memory table (default: %(default)s, the paper's crop)")
    parser.add_argument("--max-memory-gb", type=positive_float,
                        help="largest counted memory run whole (default: half the memory available now)")
    parser.add_argument("--tile-memory-gb", type=positive_float,
                        help="budget of the tiles used when a size does not fit (default: --max-memory-gb)")
    parser.add_argument("--overlap", type=non_negative_int, default=DEFAULT_OVERLAP,
                        help="tile overlap (default: %(default)s)")
    parser.add_argument("--no-caffe-time", action="store_true", help="skip Caffe's own `caffe time` runs")
    parser.add_argument("--engine", choices=ENGINES, default="caffe",
                        help="what runs inference: caffe, or onnxruntime on each net's ONNX export (inference only: "
                             "the training-memory table and `caffe time` are left out) (default: %(default)s)")
    parser.add_argument("--gpu", type=non_negative_int, help="GPU id (needs a CUDA build of Caffe; default: CPU)")
    parser.add_argument("--out", type=Path, help="folder for timing.md and timing.json (default: print only)")
    parser.set_defaults(run=run)
