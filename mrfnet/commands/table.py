"""`mrfnet table`: scored models side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from data_prep.atomic import write_text_atomic
from mrfnet.evaluate.tables import PICKS, make_table


def run(args: argparse.Namespace) -> int:
    table = make_table(args.scores, pick=args.pick)
    print(table.markdown(), end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        md, csv_path = args.out.with_suffix(".md"), args.out.with_suffix(".csv")
        write_text_atomic(md, table.markdown())
        write_text_atomic(csv_path, table.csv())
        print(f"written to {md} and {csv_path}")
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("table", help="Table II/V-style Markdown and CSV of several score outputs",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scores", nargs="+", metavar="SCORE",
                        help="a `mrfnet score` output folder or summary.json, optionally LABEL=PATH")
    parser.add_argument("--pick", choices=PICKS, default="last",
                        help="which snapshot of a run: the last, or the best PSNR on the test set (default: last)")
    parser.add_argument("--out", type=Path, help="write OUT.md and OUT.csv too (default: print only)")
    parser.set_defaults(run=run, computes=False)  # no Caffe work: the free cores are not measured
