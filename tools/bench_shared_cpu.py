"""MRFNet's training step when another process keeps a core busy: OpenMP thread counts and wait policies.

    .venv/bin/python tools/bench_shared_cpu.py [--iterations 12] [--crop 64] [--rounds 2]

Each case runs the main job's training step (batch 4, --crop, the DNNL engine: tools/bench_caffe.py's
``training_step``) in a child process of its own, with the OpenMP settings of the case in its
environment; the "busy" cases run beside a process that spins on one core for the whole child (what a
second user's job, or a compile, does to a shared machine). The cases go round --rounds times in turn,
so a slow spell of the machine touches each alike; the table gives each case's median step over all
rounds, and its ratio to the idle machine's default. A benchmark, not a test (docs/architecture.md,
"Sharing the CPU").
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, os, sys, tempfile
from pathlib import Path
sys.path.insert(0, {tools!r})
from mrfnet.runtime.threads import choose_threads
choose_threads(os.environ)  # what `mrfnet <command>` does first
from bench_caffe import training_step
from mrfnet.runtime.caffe_env import import_caffe
caffe = import_caffe()
caffe.set_mode_cpu()
with tempfile.TemporaryDirectory() as tmp:
    print(json.dumps(training_step(caffe, Path(tmp), {crop}, {iterations}, "default", "fp32")))
"""
# (label, busy core, environment); each child first chooses its threads as `mrfnet <command>` does
CASES = [
    ("idle, every core (2 threads, brief spin)", False, {"MRFNET_THREADS": "all"}),
    ("idle, 2 threads, OMP_WAIT_POLICY=PASSIVE", False, {"MRFNET_THREADS": "all", "OMP_WAIT_POLICY": "PASSIVE"}),
    ("idle, 1 thread", False, {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}),
    ("idle, mrfnet's default (MRFNET_THREADS=auto)", False, {"MRFNET_THREADS": "auto"}),
    ("busy, every core (2 threads, brief spin)", True, {"MRFNET_THREADS": "all"}),
    ("busy, 2 threads, OMP_WAIT_POLICY=PASSIVE", True, {"MRFNET_THREADS": "all", "OMP_WAIT_POLICY": "PASSIVE"}),
    ("busy, 2 threads, OMP_WAIT_POLICY=ACTIVE", True, {"MRFNET_THREADS": "all", "OMP_WAIT_POLICY": "ACTIVE"}),
    ("busy, 1 thread", True, {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}),
    ("busy, mrfnet's default (MRFNET_THREADS=auto)", True, {"MRFNET_THREADS": "auto"}),
]


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def run_case(busy: bool, environment: dict[str, str], crop: int, iterations: int) -> list[float]:
    """Step seconds of one child, beside a spinning process when ``busy``."""
    env = {**os.environ, **environment}
    hog = multiprocessing.get_context("spawn").Process(target=_spin, args=(3600,)) if busy else None
    if hog is not None:
        hog.start()
    try:
        script = CHILD.format(tools=str(REPO / "tools"), crop=crop, iterations=iterations)
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=REPO,
                              check=True)
    finally:
        if hog is not None:
            hog.terminate()
            hog.join()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=12, help="training steps timed per child")
    parser.add_argument("--crop", type=int, default=64, help="training crop side (batch 4)")
    parser.add_argument("--rounds", type=int, default=2, help="times each case runs, in turn with the others")
    parser.add_argument("--cases", help="comma-separated case numbers to run (default: all)")
    args = parser.parse_args()
    chosen = [CASES[int(i)] for i in args.cases.split(",")] if args.cases else CASES
    for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_NUM_THREADS", "MRFNET_THREADS"):
        if name in os.environ:
            print(f"note: {name}={os.environ[name]} is set in this environment; the cases add theirs to it")
    print(f"cores: {os.cpu_count()}, allowed: {len(os.sched_getaffinity(0))}")
    steps: dict[str, list[float]] = {label: [] for label, _, _ in chosen}
    for round_ in range(args.rounds):
        for label, busy, environment in chosen:
            found = run_case(busy, environment, args.crop, args.iterations)
            steps[label] += found
            print(f"round {round_ + 1}: {label}: median {statistics.median(found):.3f} s", flush=True)
    base = statistics.median(steps[chosen[0][0]])
    print(f"\nMRFNet training step, batch 4 x {args.crop}x{args.crop}, median seconds over {args.rounds} rounds of "
          f"{args.iterations} steps")
    print("| case | step s | vs the first |")
    print("|---|---|---|")
    for label, values in steps.items():
        median = statistics.median(values)
        print(f"| {label} | {median:.3f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
