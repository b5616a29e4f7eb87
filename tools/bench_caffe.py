"""Caffe's speed, engine against engine and build against build: MRFNet's training step and inference.

    .venv/bin/python tools/bench_caffe.py [--caffe PREFIX ...] [--sizes 256x256,1280x720]
        [--crops 64,256] [--repeats 3] [--iterations 10] [--large-iterations 3]

Each --caffe prefix (a tools/install_caffe.sh prefix; default: the Caffe this Python imports) runs
every setting it has, each in a child process of its own: a build with the DNNL engine
(tools/caffe-patches/0008) runs "dnnl fp32", "dnnl bf16" (where the CPU has native bfloat16) and
"caffe" (BVLC's im2col + BLAS code of the same build); one with Winograd convolutions (0010) also
runs "dnnl fp32 direct" (its float 3x3 convolutions direct, as before 0010); a build without the
engine runs "caffe" only. So the previous build (e.g. ~/.cache/mrfnet/caffe/<its key>) and this
one compare in one run.

Per setting: the training step (`Solver.step(1)`: the Data layer, MRFNet, the scale refinement loss
and Adam) at batch 4 and each --crops side (4 x 64x64 is the main job's, 4 x 256x256 the paper's per
GPU; median of --iterations after two warm-up steps, --large-iterations above 128 pixels) on a small
LMDB of random patches; and the deploy net's forward pass at each --sizes (batch 1; best of
--repeats after a warm-up; blobs shared by lifetime where the build can, so 1280x720 fits in memory).
Effective GFLOP/s count 2 FLOPs per multiply-accumulate of netgen's Table I count (a training step:
forward plus twice that for backward), against NumPy's float32 matrix product of a 1x1
convolution's shape (256 x 256 by 256 x 65536) in this process. The tables end with each setting's
times over the first setting's. A benchmark, not a test: numbers depend on the machine and on what
else runs on it.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mrfnet.runtime.caffe_env import caffe_prefix, dnnl_facts, import_caffe, run_script_with_build
from mrfnet.runtime.machine import describe_machine, machine_info
from netgen.sizes import parse_sizes, size_label

REPO = Path(__file__).resolve().parents[1]
VARIANT = "mrfnet"
TRAIN_BATCH = 4  # the main job's batch, and the paper's 16 over four GPUs
RECORDS = 16
WARMUP_STEPS = 2
LARGE_CROP = 128  # crops above this take --large-iterations


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
    from mrfnet.analyze.layer_counts import layer_table
    from netgen import build_deploy

    return sum(row.macs for row in layer_table(str(build_deploy(VARIANT, height=height, width=width,
                                                                share_blobs=False))))


def _random_lmdb(path: Path, side: int) -> None:
    from data_prep.lmdb_writer import LmdbWriter
    from data_prep.records import encode_pair

    rng = np.random.default_rng(0)
    with LmdbWriter(path) as writer:
        for index in range(RECORDS):
            sharp = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            writer.put(f"{index:04d}", encode_pair(sharp[::-1].copy(), sharp))


def settings_of(caffe: Any) -> list[tuple[str, str, str]]:
    """(engine, precision, algorithm) the Caffe this process imports can run."""
    from caffe.proto import caffe_pb2

    dnnl = dnnl_facts(caffe)
    if not dnnl["dnnl"]:
        return [("caffe", "fp32", "auto")]
    native_bf16 = [("dnnl", "bf16", "auto")] if dnnl["dnnl_native_bf16"] else []
    winograd = "algorithm" in caffe_pb2.ConvolutionParameter.DESCRIPTOR.fields_by_name
    direct = [("dnnl", "fp32", "direct")] if winograd else []
    return [("dnnl", "fp32", "auto"), *direct, *native_bf16, ("caffe", "fp32", "auto")]


def training_step(caffe: Any, folder: Path, crop: int, iterations: int, engine: str, precision: str,
                  before_timing: Callable[[], None] | None = None, algorithm: str = "auto") -> list[float]:
    """Seconds of each of ``iterations`` MRFNet training steps (batch 4, ``crop``) after the warm-up steps, on a
    random LMDB made in ``folder``; ``before_timing`` runs between the two (tools/bench_dnnl_profile.py marks it)."""
    from mrfnet.train.schedule import Schedule, solver_parameter
    from netgen import build_train_val
    from netgen.engine import set_convolution_engine

    lmdb = folder / f"lmdb{crop}"
    if not lmdb.is_dir():
        _random_lmdb(lmdb, crop + crop // 2)
    (folder / "train_val.prototxt").write_text(str(set_convolution_engine(build_train_val(
        VARIANT, train_source=str(lmdb), val_source=str(lmdb), batch_size=TRAIN_BATCH, crop_size=crop),
        engine=engine, precision=precision, algorithm=algorithm)))
    schedule = Schedule(records=RECORDS, batch_size=TRAIN_BATCH, epochs=1000)  # no halving, no snapshot here
    param = solver_parameter(schedule, net=str(folder / "train_val.prototxt"), snapshot_prefix=str(folder / "s"),
                             base_lr=5e-4)
    param.snapshot = 0
    (folder / "solver.prototxt").write_text(str(param))
    solver = caffe.get_solver(str(folder / "solver.prototxt"))
    solver.step(WARMUP_STEPS)
    if before_timing is not None:
        before_timing()
    steps = []
    for _ in range(iterations):
        start = time.perf_counter()
        solver.step(1)
        steps.append(time.perf_counter() - start)
    return steps


def _forward(caffe: Any, folder: Path, height: int, width: int, repeats: int, engine: str,
             precision: str, algorithm: str) -> float:
    from caffe.proto import caffe_pb2

    from netgen import INPUT, build_deploy
    from netgen.engine import set_convolution_engine

    lean = "share_test_blobs" in caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name
    deploy = folder / "deploy.prototxt"
    deploy.write_text(str(set_convolution_engine(build_deploy(VARIANT, height=height, width=width, share_blobs=lean),
                                                 engine=engine, precision=precision, algorithm=algorithm)))
    net = caffe.Net(str(deploy), caffe.TEST)
    net.blobs[INPUT].data[...] = np.random.default_rng(0).random(net.blobs[INPUT].data.shape)
    net.forward()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        net.forward()
        best = min(best, time.perf_counter() - start)
    return best


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """In this (child) process: one setting's forward and training-step seconds."""
    caffe = import_caffe()
    caffe.set_mode_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        forward = {size_label(h, w): _forward(caffe, folder, h, w, args.repeats, args.engine, args.precision,
                                              args.algorithm)
                   for h, w in parse_sizes(args.sizes)}
        steps = {crop: training_step(caffe, folder, crop, args.large_iterations if crop > LARGE_CROP
                                      else args.iterations, args.engine, args.precision, algorithm=args.algorithm)
                 for crop in _crops(args.crops)}
    return {"prefix": str(caffe_prefix(caffe)), "forward": forward, "steps": steps}


def _crops(text: str) -> list[int]:
    return [int(side) for side in text.split(",") if side]


def _list_settings(prefix: Path | None) -> list[tuple[str, str, str]]:
    return [tuple(pair) for pair in run_script_with_build(prefix, __file__, ["--child-settings"], REPO)]


def run_setting(prefix: Path | None, setting: tuple[str, str, str], args: argparse.Namespace) -> dict[str, Any]:
    engine, precision, algorithm = setting
    return run_script_with_build(prefix, __file__, [
        "--child", "--engine", engine, "--precision", precision, "--algorithm", algorithm,
        "--sizes", args.sizes, "--crops", args.crops,
        "--repeats", str(args.repeats), "--iterations", str(args.iterations),
        "--large-iterations", str(args.large_iterations)], REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caffe", type=Path, action="append", default=[],
                        help="a tools/install_caffe.sh prefix (repeatable; default: this Python's Caffe)")
    parser.add_argument("--sizes", default="256x256,1280x720", help="WIDTHxHEIGHT of the forward passes")
    parser.add_argument("--crops", default="64,256", help="training crop sides (batch 4)")
    parser.add_argument("--repeats", type=int, default=3, help="forward passes timed (best kept)")
    parser.add_argument("--iterations", type=int, default=10, help="training steps timed (median kept)")
    parser.add_argument("--large-iterations", type=int, default=3, help=f"the same above {LARGE_CROP} pixels")
    parser.add_argument("--engine", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--algorithm", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-settings", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child_settings:
        print(json.dumps(settings_of(import_caffe())))
        return
    if args.child:
        print(json.dumps(measure(args)))
        return
    print(f"machine: {describe_machine(machine_info())}")
    sgemm = numpy_sgemm_gflops()
    print(f"NumPy sgemm (256x256 by 256x65536, float32): {sgemm:.1f} GFLOP/s")
    rows = []
    for prefix in args.caffe or [None]:
        for setting in _list_settings(prefix):
            found = run_setting(prefix, setting, args)
            engine, precision, algorithm = setting
            label = f"{engine} {precision}" + ("" if algorithm == "auto" else f" {algorithm}")
            rows.append((f"{Path(found['prefix']).name} {label}", found))
    sizes = [size_label(h, w) for h, w in parse_sizes(args.sizes)]
    crops = _crops(args.crops)
    macs = {label: forward_macs(h, w) for (h, w), label in zip(parse_sizes(args.sizes), sizes, strict=True)}
    train_macs = {crop: TRAIN_BATCH * forward_macs(crop, crop) for crop in crops}
    print("\nTraining step (Solver.step: data, net, scale loss, Adam), median seconds; GFLOP/s; share of sgemm; "
          "speed-up over the first row")
    print("| build, engine, precision | " + " | ".join(f"{TRAIN_BATCH}x{c}x{c} s | GFLOP/s | of sgemm | vs first"
                                                      for c in crops) + " |")
    print("|---|" + "---|---|---|---|" * len(crops))
    first: dict[Any, float] = {}
    for name, found in rows:
        cells = []
        for crop in crops:
            step = statistics.median(found["steps"][str(crop)])
            gflops = 3 * 2 * train_macs[crop] / step / 1e9
            first.setdefault(("step", crop), step)
            cells.append(f"{step:.3f} | {gflops:.1f} | {gflops / sgemm:.0%} | {first[('step', crop)] / step:.2f}x")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nInference (deploy forward, batch 1), best seconds; GFLOP/s; share of sgemm; speed-up over the first row")
    print("| build, engine, precision | " + " | ".join(f"{s} s | GFLOP/s | of sgemm | vs first" for s in sizes) + " |")
    print("|---|" + "---|---|---|---|" * len(sizes))
    for name, found in rows:
        cells = []
        for size in sizes:
            seconds = found["forward"][size]
            gflops = 2 * macs[size] / seconds / 1e9
            first.setdefault(("forward", size), seconds)
            cells.append(f"{seconds:.3f} | {gflops:.1f} | {gflops / sgemm:.0%} | "
                         f"{first[('forward', size)] / seconds:.2f}x")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
