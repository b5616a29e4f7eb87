"""`mrfnet netgen`: write the variants' prototxt, check the committed ones, Table I, drawings."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mrfnet.analyze import layer_counts
from mrfnet.commands.options import add_variants_argument
from mrfnet.runtime.errors import MissingInput
from netgen.draw import draw_variant
from netgen.network import committed_prototxts, write_prototxts
from netgen.sizes import parse_sizes
from netgen.variants import VARIANTS

log = logging.getLogger(__name__)


DEFAULT_OUT_DIR = Path(__file__).resolve().parents[2] / "prototxt"  # the repository's committed nets


def stale_files(out_dir: Path, variants: list[str]) -> list[Path]:
    """Files under ``out_dir`` that are missing or differ from the generator's output."""

    return [out_dir / variant / name for variant in variants
            for name, text in committed_prototxts(variant).items()
            if not (out_dir / variant / name).is_file() or (out_dir / variant / name).read_text() != text]


def _report(args: argparse.Namespace, variants: list[str]) -> None:
    sizes = parse_sizes(args.sizes)
    if args.report_prototxt:
        path = Path(args.report_prototxt)
        if not path.is_file():
            raise MissingInput(f"--report-prototxt {path} does not exist")
        tables = [layer_counts.layer_table(path.read_text(), h, w) for h, w in sizes]
        print(layer_counts.format_layers(str(path), tables, sizes))
        return
    results = {}
    for variant in variants:
        tables = layer_counts.variant_tables(variant, sizes)
        results[variant] = layer_counts.totals(tables)
        print(layer_counts.format_layers(variant, tables, sizes), end="\n\n")
    print(layer_counts.format_summary(results, sizes))


def run(args: argparse.Namespace) -> int:
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
        for variant in variants:
            log.info("drew %s", draw_variant(variant, args.draw))
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("netgen", help="generate, check, report and draw the networks' prototxt",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_variants_argument(parser)
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
