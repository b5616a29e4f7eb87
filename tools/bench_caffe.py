"""Caffe's speed, build against build: MRFNet's deploy forward and its training step, against NumPy's sgemm.

    .venv/bin/python tools/bench_caffe.py --caffe "$(bash tools/install_caffe.sh --python .venv/bin/python \\
        --baseline)" --caffe ~/.cache/mrfnet/caffe/<the project's key> [--repeats 5] [--iterations 12]

For each --caffe prefix (default: the Caffe this Python imports), in a child process of its own:
the deploy net's forward pass at --size (default 256x256, batch 1; mean of --repeats after a warm-up)
and the training step (`Solver.step(1)`, Adam, the scale refinement loss) at the main job's batch
and crop (4 x 64x64; median of --iterations after two) on a small LMDB of random patches made for
the run. Effective GFLOP/s counts 2 FLOPs per multiply-accumulate of netgen's Table I count
(a training step: forward plus twice that for backward), against NumPy's float32 matrix product
of a 1x1 convolution's shape (256 x 256 by 256 x 65536) in this process. The table ends with
each build's times over the first build's. A benchmark, not a test: numbers depend on the machine
and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mrfnet.runtime.caffe_env import caffe_prefix, import_caffe, run_script_with_build
from mrfnet.runtime.machine import describe_machine, machine_info
from netgen.sizes import parse_sizes, size_label

REPO = Path(__file__).resolve().parents[1]
VARIANT = "mrfnet"
TRAIN_BATCH, TRAIN_CROP, PATCH = 4, 64, 96  # the main job's batch and crop (mrfnet.reproduce.FULL)
RECORDS = 16
WARMUP_STEPS = 2


def numpy_sgemm_gflops(repeats: int = 5) -> float:
    """NumPy's float32 product at a 1x1 convolution's shape (256->256 channels, 256x256 pixels)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256), dtype=np.float32)
    b = rng.standard_normal((256, 256 * 256), dtype=np.float32)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * 256 * 256 * 256 * 256 / min(times) / 1e9


def forward_macs(height: int, width: int) -> int:
    from mrfnet.analyze.table1 import layer_table
    from netgen import build_deploy

    return sum(row.macs for row in layer_table(str(build_deploy(VARIANT, height=height, width=width,
                                                                share_blobs=False))))


def _random_lmdb(path: Path) -> None:
    from data_prep.lmdb_writer import LmdbWriter
    from data_prep.records import encode_pair

    rng = np.random.default_rng(0)
    with LmdbWriter(path) as writer:
        for index in range(RECORDS):
            sharp = rng.integers(0, 256, (PATCH, PATCH, 3), dtype=np.uint8)
            writer.put(f"{index:04d}", encode_pair(sharp[::-1].copy(), sharp))


def measure(height: int, width: int, repeats: int, iterations: int) -> dict[str, Any]:
    """In this (child) process: forward seconds and training-step seconds of this build."""
    from mrfnet.train.schedule import Schedule, solver_parameter
    from netgen import INPUT, build_deploy, build_train_val

    caffe = import_caffe()
    caffe.set_mode_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        deploy = folder / "deploy.prototxt"
        deploy.write_text(str(build_deploy(VARIANT, height=height, width=width, share_blobs=False)))
        net = caffe.Net(str(deploy), caffe.TEST)
        net.blobs[INPUT].data[...] = np.random.default_rng(0).random(net.blobs[INPUT].data.shape)
        net.forward()
        forward = []
        for _ in range(repeats):
            start = time.perf_counter()
            net.forward()
            forward.append(time.perf_counter() - start)
        del net
        _random_lmdb(folder / "lmdb")
        (folder / "train_val.prototxt").write_text(str(build_train_val(
            VARIANT, train_source=str(folder / "lmdb"), val_source=str(folder / "lmdb"), batch_size=TRAIN_BATCH,
            crop_size=TRAIN_CROP)))
        schedule = Schedule(records=RECORDS, batch_size=TRAIN_BATCH, epochs=1000)  # no halving, no snapshot here
        param = solver_parameter(schedule, net=str(folder / "train_val.prototxt"), snapshot_prefix=str(folder / "s"),
                                 base_lr=5e-4)
        param.snapshot = 0
        (folder / "solver.prototxt").write_text(str(param))
        solver = caffe.get_solver(str(folder / "solver.prototxt"))
        steps = []
        for step in range(iterations + WARMUP_STEPS):
            start = time.perf_counter()
            solver.step(1)
            if step >= WARMUP_STEPS:
                steps.append(time.perf_counter() - start)
    return {"prefix": str(caffe_prefix(caffe)), "forward": forward, "step": steps,
            "forward_macs": forward_macs(height, width),
            "train_macs": TRAIN_BATCH * forward_macs(TRAIN_CROP, TRAIN_CROP)}


def run_build(prefix: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    return run_script_with_build(prefix, __file__, ["--child", "--size", args.size, "--repeats", str(args.repeats),
                                                    "--iterations", str(args.iterations)], REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caffe", type=Path, action="append", default=[],
                        help="a tools/install_caffe.sh prefix (repeatable; default: this Python's Caffe)")
    parser.add_argument("--size", default="256x256", help="WIDTHxHEIGHT of the forward pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    (height, width), = parse_sizes(args.size)
    if args.child:
        print(json.dumps(measure(height, width, args.repeats, args.iterations)))
        return
    print(f"machine: {describe_machine(machine_info())}")
    sgemm = numpy_sgemm_gflops()
    print(f"NumPy sgemm (256x256 by 256x65536, float32): {sgemm:.1f} GFLOP/s")
    results = [run_build(prefix, args) for prefix in (args.caffe or [None])]
    print(f"\n| build | {VARIANT} forward {size_label(height, width)} s | GFLOP/s | of sgemm | "
          f"training step {TRAIN_BATCH}x{TRAIN_CROP}x{TRAIN_CROP} s | GFLOP/s | of sgemm | forward vs first | "
          "step vs first |")
    print("|---|---|---|---|---|---|---|---|---|")
    first = None
    for found in results:
        forward, step = statistics.mean(found["forward"]), statistics.median(found["step"])
        forward_gflops = 2 * found["forward_macs"] / forward / 1e9
        step_gflops = 3 * 2 * found["train_macs"] / step / 1e9
        first = first or (forward, step)
        print(f"| {Path(found['prefix']).name} | {forward:.3f} | {forward_gflops:.1f} | {forward_gflops / sgemm:.0%} "
              f"| {step:.3f} | {step_gflops:.1f} | {step_gflops / sgemm:.0%} | {first[0] / forward:.2f}x "
              f"| {first[1] / step:.2f}x |")


if __name__ == "__main__":
    main()
