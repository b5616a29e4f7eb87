"""`mrfnet plot-log`: curves of a run's Caffe log."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrfnet.train.caffe_log import plot_run


def run(args: argparse.Namespace) -> int:
    plot_run(args.run_dir)
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plot-log", help="parse a run's Caffe log into CSV and draw it",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN", type=Path, help="run folder (or a Caffe log file)")
    parser.set_defaults(run=run, computes=False)  # no Caffe work: the free cores are not measured
