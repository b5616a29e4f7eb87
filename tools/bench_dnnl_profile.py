"""Where a DNNL-engine training step's time goes: oneDNN's kernels, its layout reorders, and the rest.

    .venv/bin/python tools/bench_dnnl_profile.py [--crops 64,256] [--precision fp32|bf16] [--iterations 5]

The DNNL engine runs (de)convolutions on oneDNN (tools/caffe-patches/0008) and keeps activations and
gradients in oneDNN's blocked layouts between them, with ReLU, MAX pooling, Eltwise SUM and Split's
gradient sum on oneDNN too (0009); reorders remain where a layer reads Caffe's plain layout, where a
primitive wants another layout (bfloat16 on AMX) and for the weights. This profile is what decided
that and shows what is left: a child process trains MRFNet (batch 4, the scale refinement loss, Adam)
with oneDNN's verbose mode on, which times every primitive oneDNN runs; the step's wall time is split
into convolution and deconvolution kernels, oneDNN's other layers, reorders of activations and their
gradients, reorders of weights (including the accumulation into Caffe's weight diffs), and everything
else (Caffe's own layers, losses, data layer and solver). Verbose mode's printing slows the step down,
so the step time comes from a second child without it, and "rest" is that time less oneDNN's own.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN_BATCH = 4  # bench_caffe's
MARK = "bench_dnnl_profile: timed steps begin"


def child(crop: int, precision: str, iterations: int) -> None:
    """Train in this process (oneDNN verbose on); print MARK, the timed steps' oneDNN lines, then the times."""
    from bench_caffe import training_step  # beside this file: the one training-step benchmark

    from mrfnet.runtime.caffe_env import import_caffe

    caffe = import_caffe()
    caffe.set_mode_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        steps = training_step(caffe, Path(tmp), crop, iterations, "dnnl", precision,
                              before_timing=lambda: print(MARK, flush=True))
        sys.stdout.flush()
    print(json.dumps(steps), flush=True)


def classify(fields: list[str]) -> str:
    """A verbose exec line's share: 'convolutions', 'other layers', 'activation reorders' or 'weight reorders'."""
    primitive, problem = fields[3], fields[-2]
    if primitive in ("convolution", "deconvolution"):
        return "convolutions"
    if primitive != "reorder":
        return "other layers"  # ReLU (eltwise), pooling, sums
    dims = [int(d) for d in problem.split("x") if d.isdigit()]
    batch_first = len(dims) == 4 and dims[0] == TRAIN_BATCH and dims[2] * dims[3] > 25
    return "activation reorders" if batch_first else "weight reorders"


def _timed_lines(crop: int, precision: str, iterations: int, verbose: bool) -> list[str]:
    """A child's stdout lines from the timed steps on (the last: the steps' seconds)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for name in ("DNNL_VERBOSE", "ONEDNN_VERBOSE"):
        env[name] = "1" if verbose else "0"
    done = subprocess.run([sys.executable, __file__, "--child", "--crops", str(crop), "--precision", precision,
                           "--iterations", str(iterations)], env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the profiled child failed:\n{done.stderr[-3000:]}")
    lines = done.stdout.splitlines()
    return lines[lines.index(MARK) + 1:]


def profile(crop: int, precision: str, iterations: int) -> dict[str, float]:
    """Seconds per step: the wall time (without verbose mode) and each share (the rest: what oneDNN did not run)."""
    timed = _timed_lines(crop, precision, iterations, verbose=True)
    steps = json.loads(_timed_lines(crop, precision, iterations, verbose=False)[-1])
    shares: dict[str, float] = defaultdict(float)
    for line in timed[:-1]:
        fields = line.split(",")
        if len(fields) > 4 and fields[1] == "exec":
            shares[classify(fields)] += float(fields[-1]) / 1e3 / iterations
    step = statistics.median(steps)
    return {"step": step, **shares, "rest": step - sum(shares.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", default="64,256", help="training crop sides (batch 4)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    crops = [int(c) for c in args.crops.split(",") if c]
    if args.child:
        child(crops[0], args.precision, args.iterations)
        return
    columns = ("convolutions", "other layers", "activation reorders", "weight reorders", "rest")
    print(f"MRFNet training step on the DNNL engine, {args.precision}, batch {TRAIN_BATCH} (median of "
          f"{args.iterations}); seconds per step and share of the step")
    print("| crop | step s | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for crop in crops:
        found = profile(crop, args.precision, args.iterations)
        cells = [f"{found.get(c, 0.0):.3f} ({found.get(c, 0.0) / found['step']:.0%})" for c in columns]
        print(f"| {crop}x{crop} | {found['step']:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
