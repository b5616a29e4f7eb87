"""Benchmark `mrfnet data-prep` on the embedded set: pairs/s and MB/s per patch size and worker count.

    .venv/bin/python tools/bench_data_prep.py [--patch-sizes 64 96] [--workers 1 2] [--copies 1] [--repeats 3]

Each configuration builds the embedded set into a temporary folder (default stride: half the
patch; --copies blurred versions of each image, for a larger job) and reports the best of
--repeats runs; seconds include planning, worker start-up (about a second each) and the LMDB
writes. A benchmark, not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from data_prep.build import build_dataset
from data_prep.options import BuildOptions


def bench(patch_size: int, workers: int, copies: int, repeats: int) -> tuple[int, int, float]:
    """(records, bytes, best seconds) of building the embedded set."""
    best = float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            summary = build_dataset(BuildOptions(out=Path(tmp) / "embedded", patch_size=patch_size, workers=workers,
                                                 copies=copies))
            best = min(best, time.perf_counter() - start)
    return summary["records"], summary["bytes"], best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch-sizes", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--copies", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"{'patch':>5} {'copies':>6} {'workers':>7} {'pairs':>6} {'MB':>7} {'seconds':>8} {'pairs/s':>8} {'MB/s':>7}")
    for patch_size in args.patch_sizes:
        for copies in args.copies:
            for workers in args.workers:
                count, size, seconds = bench(patch_size, workers, copies, args.repeats)
                print(f"{patch_size:>5} {copies:>6} {workers:>7} {count:>6} {size / 1e6:>7.1f} {seconds:>8.2f} "
                      f"{count / seconds:>8.0f} {size / 1e6 / seconds:>7.1f}")


if __name__ == "__main__":
    main()
