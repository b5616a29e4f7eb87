"""`mrfnet reproduce`: the main job, end to end."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mrfnet.reproduce.job import DEFAULT_NAME, FULL, QUICK, default_work_dir, reproduce


def run(args: argparse.Namespace) -> int:
    budget = QUICK if args.quick else FULL
    name = args.name or ("quick" if args.quick else DEFAULT_NAME)
    work_dir = args.work_dir or default_work_dir(name)
    reproduce(name, work_dir, args.reports, budget, shlex.join(["mrfnet", *sys.argv[1:]]))
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reproduce", help="the main job: data, four variants, scores, timing, report",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"a few-minute version ({QUICK.headline_iterations} iterations for the headline run, "
                             f"{QUICK.ablation_iterations} per ablation run, tiny crops)")
    parser.add_argument("--name", help="report name (default: embedded-cpu, or quick with --quick)")
    parser.add_argument("--reports", type=Path, default=Path("reports"),
                        help="folder of report folders (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path,
                        help="data and run folders (default: runs/reproduce-<name>); reused on a second call")
    parser.set_defaults(run=run)
