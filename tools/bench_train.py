"""Benchmark: seconds per training iteration of each variant, and what the Python loss and the edge branch cost.

    python tools/bench_train.py [--data data/embedded] [--crop-size 64] [--batch-size 4] [--iterations 12]

Trains every variant for a few iterations in throw-away run folders with the native loss, the
Python scale loss and the native loss plus the edge branch, and prints a Markdown table of the
median seconds per iteration (after the first two, which include set-up) from progress.csv's
wall_time column. Needs a data_prep output folder (`mrfnet data-prep` makes data/embedded).
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import tempfile
from pathlib import Path

from mrfnet.train.driver import train
from mrfnet.train.options import TrainOptions
from mrfnet.train.run_setup import prepare_run
from netgen.variants import VARIANTS

SETTINGS = {"native": dict(loss="native"), "python loss": dict(loss="python"),
            "native + edge": dict(loss="native", edge=True)}
WARMUP = 2


def seconds_per_iteration(run_dir: Path) -> float:
    with (run_dir / "progress.csv").open() as file:
        times = [float(row["wall_time"]) for row in csv.DictReader(file)]
    steps = [b - a for a, b in zip(times[WARMUP:], times[WARMUP + 1:], strict=False)]
    return statistics.median(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/embedded"), help="data_prep output folder")
    parser.add_argument("--crop-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not (args.data / "train_lmdb").is_dir():
        parser.error(f"no {args.data / 'train_lmdb'}: build it first with `mrfnet data-prep --out {args.data}`")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mrfnet-bench-train-") as tmp:
        for variant in args.variants:
            for setting in args.settings:
                options = TrainOptions(variant=variant, data=str(args.data), run_dir=f"{tmp}/{variant}-{setting}",
                                       batch_size=args.batch_size, crop_size=args.crop_size,
                                       iterations=args.iterations, snapshot_every=args.iterations,
                                       loss_schedule="uniform", **SETTINGS[setting])
                run_dir = prepare_run(options, ["bench_train"])
                train(run_dir)
                rows[variant, setting] = seconds_per_iteration(run_dir)
    print(f"\nSeconds per iteration, CPU, batch {args.batch_size}, crop {args.crop_size}, "
          f"median of iterations {WARMUP + 1}..{args.iterations}\n")
    print("| variant | " + " | ".join(args.settings) + " |")
    print("|---" * (len(args.settings) + 1) + "|")
    for variant in args.variants:
        print(f"| {variant} | " + " | ".join(f"{rows[variant, s]:.3f}" for s in args.settings) + " |")


if __name__ == "__main__":
    main()
