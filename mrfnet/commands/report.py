"""`mrfnet report`: redraw a reproduction report from its results."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrfnet.reproduce.report import summary_lines, write_report


def run(args: argparse.Namespace) -> int:
    write_report(args.report_dir)
    for line in summary_lines(args.report_dir):
        print(line)
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="redraw a reproduction report from its results.json",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report_dir", type=Path, help="a folder written by `mrfnet reproduce`")
    parser.set_defaults(run=run, computes=False)  # no Caffe work: the free cores are not measured
