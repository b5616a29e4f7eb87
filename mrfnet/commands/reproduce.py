"""`mrfnet reproduce`: the main job, end to end.

Profiles (`--profile`): `demo`, the default, about 50 minutes on 2 cores (reports/embedded-cpu); `long`,
about 2.5 hours, every ablation run over three seeds until its curve flattens and the headline on blur up to
15 px (reports/embedded-cpu-long); `quick`, the few-minute version the tests run (`--quick`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mrfnet.reproduce.budgets import PROFILES
from mrfnet.reproduce.job import default_work_dir, reproduce
from mrfnet.runtime.errors import InvalidValue


def run(args: argparse.Namespace) -> int:
    if args.quick and args.profile not in (None, "quick"):
        raise InvalidValue(f"--quick is --profile quick, not --profile {args.profile}")
    profile = "quick" if args.quick else args.profile or "demo"
    budget, default_name = PROFILES[profile]
    name = args.name or default_name
    work_dir = args.work_dir or default_work_dir(name)
    reproduce(name, work_dir, args.reports, budget, shlex.join(["mrfnet", *sys.argv[1:]]))
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reproduce", help="the main job: data, four variants, scores, timing, report",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=tuple(PROFILES),
                        help="how much to train: " + "; ".join(
                            f"{name}: about {budget.minutes} minutes, reports/{report}"
                            for name, (budget, report) in PROFILES.items()) + " (default: demo)")
    quick = PROFILES["quick"][0]
    parser.add_argument("--quick", action="store_true",
                        help=f"--profile quick: {quick.headline_iterations} iterations for the headline run, "
                             f"{quick.ablation_iterations} per ablation run, tiny crops")
    parser.add_argument("--name", help="report name (default: the profile's, e.g. embedded-cpu for the demo)")
    parser.add_argument("--reports", type=Path, default=Path("reports"),
                        help="folder of report folders (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path,
                        help="data and run folders (default: runs/reproduce-<name>); reused on a second call")
    parser.set_defaults(run=run)
