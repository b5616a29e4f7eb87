"""`mrfnet doctor`: is Caffe built, linked and working here?"""

from __future__ import annotations

import argparse
import json

from mrfnet.runtime.doctor import collect, format_report


def run(args: argparse.Namespace) -> int:
    report = collect()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    caffe = report["caffe"]
    healthy = "error" not in caffe and caffe["python_layer"] and report["lmdb"]["ok"]
    return 0 if healthy else 1


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor", help="report the Caffe build in use and its capabilities",
        description="Report the Caffe build in use, its options, whether Python layers, LMDB and "
        "GPU/NCCL work, and library versions. Exits 1 if Caffe, Python layers or LMDB are missing.")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)
