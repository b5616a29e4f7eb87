"""This project's Caffe against PyTorch and ONNX Runtime on one MRFNet, CPU: a training step and inference.

    python3 -m venv .venv-peers && .venv-peers/bin/pip install torch==2.13.0 onnx2torch onnx numpy
    .venv/bin/python tools/bench_peers.py --torch-python .venv-peers/bin/python [--steps 10] [--repeats 3,2]
        [--train-batch 4] [--train-size 64x64] [--sizes 256x256,1280x720]

PyTorch is no dependency of the project: it runs from --torch-python, the interpreter of a virtual
environment of its own (the line above makes one; torch 2.13.0 is the CPU wheel pip finds on this
machine's disk, and the torchvision pip adds for onnx2torch, built on CUDA torch, does not import beside
it: onnx2torch is loaded without it, as MRFNet needs none of its ops). Without --torch-python the
PyTorch columns read n/a.

One MRFNet deploy net (netgen, share_blobs=False), every parameter drawn N(0, 0.02) with --seed, saved
as a caffemodel and exported by the project's exporter to ONNX (opset 18: onnx2torch 1.5 has no
AveragePool-19), runs in every engine: Caffe with the DNNL engine in float32 and, where the CPU has
native bfloat16 (`caffe.dnnl_native_bf16()`), in bf16; Caffe's engine CAFFE (BVLC's im2col + BLAS,
same build); PyTorch on the ONNX file converted by onnx2torch, float32 NCHW, float32 channels_last
(model and input) and bf16 autocast (NCHW); ONNX Runtime float32 (inference only).

Training step: forward, then the gradient of MSE/2 on out_r4 alone, backward; no optimiser in any
engine. Caffe's deploy net gets force_backward (it has no loss layer, and without it Caffe skips
backward) and computes its input's gradient, so PyTorch's input requires grad too. Time: the median
of --steps steps after one warm-up step, at --train-batch x --train-size. Inference: batch 1 at each
of --sizes, the best of --repeats calls after one warm-up call.

Every engine and every measurement runs in a child process of its own, with 2 threads (OMP_NUM_THREADS,
torch.set_num_threads, ONNX Runtime's intra-op threads). Before the times it prints each engine's
largest difference from Caffe's engine CAFFE on out_r4 of one random input. The second table is each
time over Caffe DNNL fp32's. A benchmark, not a test: numbers depend on the machine and on what else
runs on it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# This file also runs under --torch-python, whose environment has neither Caffe nor the project: at the
# top only the standard library and NumPy; the project's modules (netgen imports Caffe) inside functions.

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
VARIANT = "mrfnet"
THREADS = 2
WEIGHT_STD = 0.02
OPSET = 18  # onnx2torch 1.5 converts AveragePool up to opset 18
PARITY_SHAPE = (1, 3, 40, 56)
WEIGHTS, ONNX, MANIFEST = "net.caffemodel", "net.onnx", "manifest.json"
PARITY, TRAIN = "parity", "train"
REFERENCE, BASELINE = "caffe-caffe-fp32", "caffe-dnnl-fp32"
ENGINES = {
    "caffe-dnnl-fp32": "Caffe DNNL fp32",
    "caffe-dnnl-bf16": "Caffe DNNL bf16",
    "caffe-caffe-fp32": "Caffe engine CAFFE",
    "torch-nchw": "PyTorch fp32 NCHW",
    "torch-channels-last": "PyTorch fp32 channels_last",
    "torch-bf16": "PyTorch bf16 autocast",
    "onnxruntime": "ONNX Runtime fp32",
}


def timed(run: Callable[[], Any], count: int) -> list[float]:
    """Seconds of each of ``count`` calls of ``run``, after one warm-up call."""
    run()
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def save_output(folder: Path, engine: str, output: np.ndarray, version: str) -> dict[str, Any]:
    path = folder / f"out-{engine}.npy"
    np.save(path, np.asarray(output, dtype=np.float32))
    return {"output": str(path), "version": version}


def prepare(folder: Path, train: tuple[int, int, int], sizes: list[tuple[int, int]], seed: int) -> dict[str, Any]:
    """In this (child) process: the weights, their ONNX export, the inputs and the manifest in ``folder``;
    what the Caffe build offers."""
    from mrfnet.export.exporter import export_model, save_onnx
    from mrfnet.infer.model import Model
    from mrfnet.runtime.caffe_env import build_info, caffe_prefix, dnnl_facts, import_caffe
    from netgen import INPUT, PREDICTION, build_deploy
    from netgen.sizes import size_label

    caffe = import_caffe()
    caffe.set_mode_cpu()
    batch, height, width = train
    deploy = folder / "deploy.prototxt"
    deploy.write_text(str(build_deploy(VARIANT, height=height, width=width, batch_size=batch, share_blobs=False)))
    net = caffe.Net(str(deploy), caffe.TEST)
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.normal(0.0, WEIGHT_STD, blob.data.shape)
    net.save(str(folder / WEIGHTS))
    prediction_shape = net.blobs[PREDICTION].data.shape
    del net
    exported = export_model(Model(deploy, folder / WEIGHTS), variant=VARIANT, opset=OPSET)
    save_onnx(exported, folder / ONNX)
    inputs = {PARITY: PARITY_SHAPE, TRAIN: (batch, 3, height, width), f"{TRAIN}-target": prediction_shape}
    inputs.update({f"infer-{size_label(*size)}": (1, 3, *size) for size in sizes})
    for name, shape in inputs.items():
        np.save(folder / f"{name}.npy", rng.random(shape, dtype=np.float32))
    (folder / MANIFEST).write_text(json.dumps({"input": INPUT, "prediction": PREDICTION,
                                               "onnx_outputs": [output.name for output in exported.graph.output]}))
    return {"build": build_info(caffe).get("key", str(caffe_prefix(caffe))), **dnnl_facts(caffe)}


def caffe_child(engine: str, work: str, folder: Path, count: int) -> dict[str, Any]:
    """In this (child) process: ``work`` on Caffe with the (de)convolution engine and precision ``engine`` names."""
    from mrfnet.runtime.caffe_env import build_info, import_caffe
    from netgen import build_deploy
    from netgen.engine import set_convolution_engine

    caffe = import_caffe()
    caffe.set_mode_cpu()
    names = json.loads((folder / MANIFEST).read_text())
    data = np.load(folder / f"{work}.npy")
    batch, _, height, width = data.shape
    param = build_deploy(VARIANT, height=height, width=width, batch_size=batch, share_blobs=False)
    param.force_backward = work == TRAIN
    _, convolution, precision = engine.split("-")
    set_convolution_engine(param, engine=convolution, precision=precision)
    deploy = folder / f"{engine}-{work}.prototxt"
    deploy.write_text(str(param))
    net = caffe.Net(str(deploy), str(folder / WEIGHTS), caffe.TEST)
    net.blobs[names["input"]].data[...] = data
    prediction = net.blobs[names["prediction"]]
    if work == PARITY:
        net.forward()
        return save_output(folder, engine, prediction.data, f"Caffe {caffe.__version__}, build "
                                                            f"{build_info(caffe).get('key', '?')}")
    if work != TRAIN:
        return {"seconds": timed(net.forward, count)}
    target = np.load(folder / f"{TRAIN}-target.npy")

    def step() -> None:
        net.forward()
        for name in net.outputs:
            net.blobs[name].diff[...] = 0
        prediction.diff[...] = (prediction.data - target) / prediction.count  # d(MSE/2)/d(out_r4)
        net.backward()

    return {"seconds": timed(step, count)}


def import_onnx2torch() -> types.ModuleType:
    """onnx2torch, which imports torchvision for its NonMaxSuppression and RoiAlign converters (MRFNet has
    neither). PyPI's torchvision is built on CUDA torch and fails to import beside torch's CPU wheel ("operator
    torchvision::nms does not exist"); then onnx2torch loads with empty stand-ins for those two imports."""
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError) as exc:
        log.warning("torchvision does not import (%s): onnx2torch loads without it", exc)
        stand_in, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        ops.roi_align = None
        stand_in.ops = ops
        sys.modules.update({"torchvision": stand_in, "torchvision.ops": ops})
    import onnx2torch

    return onnx2torch


def torch_child(engine: str, work: str, folder: Path, count: int) -> dict[str, Any]:
    """In this (child) process, under --torch-python: ``work`` on PyTorch with the ONNX file converted."""
    import torch

    onnx2torch = import_onnx2torch()
    torch.set_num_threads(THREADS)
    names = json.loads((folder / MANIFEST).read_text())
    index = names["onnx_outputs"].index(names["prediction"])
    model = onnx2torch.convert(str(folder / ONNX))
    data = torch.from_numpy(np.load(folder / f"{work}.npy"))
    if engine == "torch-channels-last":
        model = model.to(memory_format=torch.channels_last)
        data = data.to(memory_format=torch.channels_last)

    def forward() -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=engine == "torch-bf16"):
            return model(data)[index]

    if work == PARITY:
        with torch.inference_mode():
            output = forward().float().numpy()
        return save_output(folder, engine, output, f"torch {torch.__version__}, onnx2torch "
                                                   f"{importlib.metadata.version('onnx2torch')}")
    if work != TRAIN:
        def infer() -> None:
            with torch.inference_mode():
                forward()

        return {"seconds": timed(infer, count)}
    data.requires_grad_(True)  # as Caffe's force_backward: the first convolution's input gradient too
    target = torch.from_numpy(np.load(folder / f"{TRAIN}-target.npy"))

    def step() -> None:
        (torch.nn.functional.mse_loss(forward().float(), target) / 2).backward()

    return {"seconds": timed(step, count)}


def onnxruntime_child(engine: str, work: str, folder: Path, count: int) -> dict[str, Any]:
    """In this (child) process: inference ``work`` on ONNX Runtime's CPU provider, all four outputs."""
    import onnxruntime as ort

    names = json.loads((folder / MANIFEST).read_text())
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(folder / ONNX), options, providers=["CPUExecutionProvider"])
    feed = {names["input"]: np.load(folder / f"{work}.npy")}
    if work == PARITY:
        return save_output(folder, engine, session.run([names["prediction"]], feed)[0],
                           f"ONNX Runtime {ort.__version__}")
    return {"seconds": timed(lambda: session.run(None, feed), count)}


CHILDREN = {"caffe": caffe_child, "torch": torch_child, "onnxruntime": onnxruntime_child}


def run_torch_python(python: Path, args: list[str]) -> Any:
    """This script with ``args`` under ``python`` (its own environment only: no PYTHONPATH, so no pycaffe);
    the JSON of its last stdout line. SystemExit with its stderr if it fails."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    done = subprocess.run([str(python), __file__, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{Path(__file__).name} {' '.join(args)} with {python} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(engine: str, work: str, folder: Path, count: int, torch_python: Path | None) -> dict[str, Any]:
    """``work`` on ``engine`` in a child process of its own."""
    from mrfnet.runtime.caffe_env import run_script_with_build

    args = ["--child", engine, work, str(folder), str(count)]
    if torch_python is not None and engine.startswith("torch"):
        return run_torch_python(torch_python, args)
    return run_script_with_build(None, __file__, args, REPO)


def unavailable(facts: dict[str, Any], torch_python: Path | None) -> dict[str, str]:
    """Engine -> why it does not run here (the table's cell), for those that do not."""
    reasons = {}
    if not facts["dnnl"]:
        reasons.update(dict.fromkeys(("caffe-dnnl-fp32", "caffe-dnnl-bf16"), "n/a (no DNNL engine in this Caffe)"))
    elif not facts["dnnl_native_bf16"]:
        reasons["caffe-dnnl-bf16"] = "n/a (no native bf16)"
    if torch_python is None:
        reasons.update({engine: "n/a (no --torch-python)" for engine in ENGINES if engine.startswith("torch")})
    return reasons


def ratio_cell(seconds: float | None, baseline: float | None) -> str:
    if seconds is None or baseline is None:
        return "—"
    if seconds == baseline:
        return "1.00"
    return f"{seconds / baseline:.2f} ({'faster' if seconds < baseline else 'slower'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-python", type=Path,
                        help="python of a virtual environment with torch, onnx2torch, onnx and numpy (see above)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps, after one warm-up (median)")
    parser.add_argument("--repeats", default="3,2",
                        help="timed inference calls per --sizes entry, after one warm-up (best); comma-separated "
                             "in --sizes order, the last for any further sizes (default: %(default)s)")
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--train-size", default="64x64", help="WIDTHxHEIGHT of the training step's crops")
    parser.add_argument("--sizes", default="256x256,1280x720", help="WIDTHxHEIGHT of inference, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="of the weights and the inputs")
    parser.add_argument("--child", nargs=4, metavar=("ENGINE", "WORK", "FOLDER", "COUNT"), help=argparse.SUPPRESS)
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.child:
        engine, work, folder, count = args.child
        print(json.dumps(CHILDREN[engine.split("-")[0]](engine, work, Path(folder), int(count))))
        return

    from mrfnet.runtime.caffe_env import run_script_with_build
    from mrfnet.runtime.machine import describe_machine, machine_info
    from netgen.sizes import parse_sizes, size_label

    sizes = parse_sizes(args.sizes)
    (train_height, train_width), = parse_sizes(args.train_size)
    train = (args.train_batch, train_height, train_width)
    if args.prepare:
        print(json.dumps(prepare(args.prepare, train, sizes, args.seed)))
        return
    repeats = [int(count) for count in args.repeats.split(",")]
    os.environ["OMP_NUM_THREADS"] = str(THREADS)  # every child's OpenMP: Caffe, its BLAS, oneDNN, PyTorch
    print(f"machine: {describe_machine(machine_info())}")
    works = {TRAIN: (f"training fwd+bwd {args.train_batch} x {size_label(train_height, train_width)}", args.steps)}
    for i, size in enumerate(sizes):
        works[f"infer-{size_label(*size)}"] = (f"inference 1 x {size_label(*size)}", repeats[min(i, len(repeats) - 1)])
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        folder = Path(tmp)
        facts = run_script_with_build(None, __file__, ["--prepare", tmp, "--train-batch", str(args.train_batch),
                                                       "--train-size", args.train_size, "--sizes", args.sizes,
                                                       "--seed", str(args.seed)], REPO)
        reasons = unavailable(facts, args.torch_python)
        engines = [engine for engine in ENGINES if engine not in reasons]
        print(f"Caffe build {facts['build']}: "
              + (f"oneDNN {facts['dnnl_version']}, native bf16 {'yes' if facts['dnnl_native_bf16'] else 'no'}"
                 if facts["dnnl"] else "no DNNL engine"))
        print(f"{VARIANT} deploy net, every parameter N(0, {WEIGHT_STD}) (seed {args.seed}), ONNX opset {OPSET}; "
              f"{THREADS} threads everywhere")
        outputs = {}
        for engine in engines:
            log.info("%s: parity", ENGINES[engine])
            outputs[engine] = measure(engine, PARITY, folder, 1, args.torch_python)
        reference = np.load(outputs[REFERENCE]["output"])
        print(f"\nparity: max |out_r4 - {ENGINES[REFERENCE]}'s| on a random {' x '.join(map(str, PARITY_SHAPE))} "
              "input")
        for engine in engines:
            difference = float(np.max(np.abs(np.load(outputs[engine]["output"]) - reference)))
            print(f"- {ENGINES[engine]} ({outputs[engine]['version']}): "
                  + ("the reference" if engine == REFERENCE else f"{difference:.1e}"))
        print(f"\ntraining: median of {args.steps} steps after a warm-up; inference: best of "
              f"{', '.join(f'{count} ({label.split()[-1]})' for label, count in list(works.values())[1:])} "
              "after a warm-up\n")
        print(f"| work | {' | '.join(ENGINES.values())} |")
        print(f"|---|{'---|' * len(ENGINES)}")
        seconds: dict[tuple[str, str], float] = {}
        for work, (label, count) in works.items():
            cells = []
            for engine in ENGINES:
                if engine in reasons:
                    cells.append(reasons[engine])
                    continue
                if engine == "onnxruntime" and work == TRAIN:
                    cells.append("—")
                    continue
                log.info("%s: %s", ENGINES[engine], label)
                times = measure(engine, work, folder, count, args.torch_python)["seconds"]
                seconds[work, engine] = statistics.median(times) if work == TRAIN else min(times)
                cells.append(f"{seconds[work, engine]:.3f} s")
            print(f"| {label} | {' | '.join(cells)} |", flush=True)
    print(f"\ntime over {ENGINES[BASELINE]}'s (below 1: faster than {ENGINES[BASELINE]})\n")
    print(f"| work | {' | '.join(ENGINES.values())} |")
    print(f"|---|{'---|' * len(ENGINES)}")
    for work, (label, _) in works.items():
        baseline = seconds.get((work, BASELINE))
        print(f"| {label} | {' | '.join(ratio_cell(seconds.get((work, engine)), baseline) for engine in ENGINES)} |")


if __name__ == "__main__":
    main()
