"""`mrfnet netgen`: write the four variants' train_val and deploy prototxt, check them, report and draw them.

Without options it (re)writes prototxt/<variant>/{train_val,deploy}.prototxt. --check compares
instead of writing (exit 1 on a difference), --report prints the Table I report (every layer's
geometry, output size, parameters and multiply-adds at each --sizes, from Caffe's shape inference),
--report-prototxt reports any deploy prototxt, and --draw renders each variant with caffe.draw.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from netgen.variants import VARIANTS

log = logging.getLogger(__name__)

DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "prototxt"


def size_label(height: int, width: int) -> str:
    """"WIDTHxHEIGHT", as image sizes are usually written (1280x720) and as --sizes takes them."""
    return f"{width}x{height}"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """"256x256,1280x720" (width x height, as images are usually named) -> [(256, 256), (720, 1280)]."""
    sizes = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)x(\d+)\s*", part)
        if not match:
            raise ValueError(f"--sizes wants WIDTHxHEIGHT[,WIDTHxHEIGHT...], got {text!r}")
        sizes.append((int(match.group(2)), int(match.group(1))))
    return sizes


def stale_files(out_dir: Path, variants: list[str]) -> list[Path]:
    """Files under ``out_dir`` that are missing or differ from the generator's output."""
    from netgen.network import committed_prototxts

    return [out_dir / variant / name for variant in variants
            for name, text in committed_prototxts(variant).items()
            if not (out_dir / variant / name).is_file() or (out_dir / variant / name).read_text() != text]


def _report(args: argparse.Namespace, variants: list[str]) -> None:
    from netgen import report

    sizes = parse_sizes(args.sizes)
    if args.report_prototxt:
        path = Path(args.report_prototxt)
        if not path.is_file():
            raise FileNotFoundError(f"--report-prototxt {path} does not exist")
        tables = [report.layer_table(path.read_text(), h, w) for h, w in sizes]
        print(report.format_layers(str(path), tables, sizes))
        return
    results = {}
    for variant in variants:
        tables = report.variant_tables(variant, sizes)
        results[variant] = report.totals(tables)
        print(report.format_layers(variant, tables, sizes), end="\n\n")
    print(report.format_summary(results, sizes))


def run(args: argparse.Namespace) -> int:
    from netgen.network import write_prototxts

    variants = args.variants or list(VARIANTS)
    out_dir = Path(args.out_dir)
    if args.check:
        stale = stale_files(out_dir, variants)
        for path in stale:
            log.error("%s differs from the generator's output (run `mrfnet netgen`)", path)
        if stale:
            return 1
        log.info("%d variants' prototxt in %s match the generator", len(variants), out_dir)
    elif not (args.report or args.report_prototxt or args.draw):
        for path in write_prototxts(out_dir, variants):
            log.info("wrote %s", path)
    if args.report or args.report_prototxt:
        _report(args, variants)
    if args.draw:
        from netgen.draw import draw_variant

        for variant in variants:
            log.info("drew %s", draw_variant(variant, args.draw))
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("netgen", help="generate, check, report and draw the networks' prototxt",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), metavar="VARIANT",
                        help=f"which variants (default: all of {', '.join(VARIANTS)})")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR),
                        help="folder of <variant>/{train_val,deploy}.prototxt (default: the repository's prototxt/)")
    parser.add_argument("--check", action="store_true",
                        help="compare the files in --out-dir with the generator's output instead of writing them")
    parser.add_argument("--report", action="store_true",
                        help="print the Table I report of each variant's deploy net (writes no files)")
    parser.add_argument("--report-prototxt", metavar="FILE",
                        help="print the report of any deploy prototxt (its Input layers resized to --sizes)")
    parser.add_argument("--sizes", default="256x256,1280x720",
                        help="input sizes of the report, WIDTHxHEIGHT, comma-separated (default: %(default)s)")
    parser.add_argument("--draw", metavar="DIR",
                        help="render each variant's deploy net to DIR/<variant>.png with caffe.draw "
                             "(writes no prototxt)")
    parser.set_defaults(run=run)
