"""Benchmark: training images/s with 1 process and with N MPI ranks at the same total batch, side by side.

    python tools/bench_mpi.py [--data data/embedded] [--ranks 2] [--batch-size 4] [--crop-size 64]
                              [--iterations 14] [--repeats 2] [--variant mrfnet]

Each repeat trains the same run (throw-away folders) once as a plain `mrfnet train` (one process, all
cores) and once as `mpirun -np N mrfnet train` (each rank batch / N, the cores shared out by
mrfnet.train.ranks.split_threads), alternating, and prints a Markdown table of images/s from the
median seconds per iteration after the first two (progress.csv's wall_time). Needs Open MPI's mpirun
and a data_prep output folder (`mrfnet data-prep --out data/embedded` makes the embedded set).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WARMUP = 2


def seconds_per_iteration(run_dir: Path) -> float:
    with (run_dir / "progress.csv").open() as file:
        times = [float(row["wall_time"]) for row in csv.DictReader(file)]
    return statistics.median(b - a for a, b in zip(times[WARMUP:], times[WARMUP + 1:], strict=False))


def run(ranks: int, run_dir: Path, args: argparse.Namespace) -> float:
    command = [sys.executable, "-m", "mrfnet.cli", "train", "--run-dir", str(run_dir), "--data", str(args.data),
               "--variant", args.variant, "--batch-size", str(args.batch_size), "--crop-size", str(args.crop_size),
               "--iterations", str(args.iterations), "--snapshot-every", str(args.iterations),
               "--loss-schedule", "uniform"]
    env = dict(os.environ)
    if ranks > 1:
        command = [shutil.which("mpirun") or "mpirun", "-np", str(ranks), *command]
        if os.getuid() == 0:
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds_per_iteration(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/embedded"), help="data_prep output folder")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="the total batch, in both runs")
    parser.add_argument("--crop-size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variant", default="mrfnet")
    args = parser.parse_args()
    if not (args.data / "train_lmdb").is_dir():
        raise SystemExit(f"no {args.data / 'train_lmdb'}: make it with `mrfnet data-prep --out {args.data}`")
    seconds: dict[int, list[float]] = {1: [], args.ranks: []}
    with tempfile.TemporaryDirectory(prefix="bench-mpi-") as tmp:
        for repeat in range(args.repeats):
            for ranks in (1, args.ranks) if repeat % 2 == 0 else (args.ranks, 1):
                seconds[ranks].append(run(ranks, Path(tmp) / f"r{ranks}-{repeat}", args))
                print(f"repeat {repeat + 1}: {ranks} rank(s): {seconds[ranks][-1]:.3f} s/iteration", file=sys.stderr)
    print(f"{args.variant}, {args.crop_size}x{args.crop_size} crops, total batch {args.batch_size}, {os.cpu_count()} "
          f"cores, median s/iteration of iterations {WARMUP + 1}-{args.iterations}, {args.repeats} repeats\n")
    # the best repeat too: on a shared machine the median still carries other people's load
    print("| ranks | batch per rank | s/iteration (each repeat) | images/s (median) | vs 1 | images/s (best) | vs 1 |")
    print("|---|---|---|---|---|---|---|")
    base, base_best = args.batch_size / statistics.median(seconds[1]), args.batch_size / min(seconds[1])
    for ranks, values in seconds.items():
        rate, best = args.batch_size / statistics.median(values), args.batch_size / min(values)
        print(f"| {ranks} | {args.batch_size // ranks} | {', '.join(f'{v:.3f}' for v in values)} | {rate:.2f} "
              f"| {rate / base:.2f}x | {best:.2f} | {best / base_best:.2f}x |")


if __name__ == "__main__":
    main()
