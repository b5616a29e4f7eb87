"""Where Caffe's CPU time goes: per-layer-type share of a forward and a backward pass, for one or two builds.

    .venv/bin/python tools/bench_layers.py [--variant mrfnet] [--size 256x256] [--batch 1] [--repeats 3]
    .venv/bin/python tools/bench_layers.py --caffe ~/.cache/mrfnet/caffe/KEY_A --caffe ~/.cache/mrfnet/caffe/KEY_B

Each build runs in its own child process (pycaffe from PREFIX/lib/python3/dist-packages; without
--caffe, the one this Python imports) on the same generated deploy net (force_backward on, weights
from the prototxt's fillers with a fixed seed, a fixed random input). Every layer is run on its
own (``Net.forward(start=, end=)``, ``Net.backward(start=, end=)``) after one warm-up pass; the
table sums the layers' mean times by type. With two builds the table puts them side by side with
the ratio, and says whether the outputs and the input gradients are bit-identical. A benchmark,
not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from mrfnet.analyze.measure import write_deploy
from mrfnet.runtime.caffe_env import caffe_prefix, import_caffe, run_script_with_build

REPO = Path(__file__).resolve().parents[1]


def profile(variant: str, height: int, width: int, batch: int, repeats: int) -> dict[str, Any]:
    """In this process: mean seconds per layer type, forward and backward, and digests of the results."""
    caffe = import_caffe()
    caffe.set_mode_cpu()
    caffe.set_random_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        net = caffe.Net(write_deploy(variant, height, width, batch, Path(tmp), train=True), caffe.TEST)
    rng = np.random.default_rng(0)
    net.blobs["blur"].data[...] = rng.random(net.blobs["blur"].data.shape, dtype=np.float32)
    names = list(net._layer_names)
    types = [layer.type for layer in net.layers]
    outputs = list(net.outputs)
    forward = np.zeros((repeats, len(names)))
    backward = np.zeros((repeats, len(names)))
    for repeat in range(-1, repeats):  # -1: the warm-up (Caffe allocates on the first pass)
        for i, name in enumerate(names):
            start = time.perf_counter()
            net.forward(start=name, end=name)
            if repeat >= 0:
                forward[repeat, i] = time.perf_counter() - start
        for name in outputs:
            net.blobs[name].diff[...] = 1e-3
        for i in reversed(range(len(names))):
            start = time.perf_counter()
            net.backward(start=names[i], end=names[i])
            if repeat >= 0:
                backward[repeat, i] = time.perf_counter() - start
    by_type: dict[str, dict[str, float]] = defaultdict(lambda: {"forward": 0.0, "backward": 0.0, "layers": 0})
    for i, kind in enumerate(types):
        by_type[kind]["forward"] += float(forward[:, i].mean())
        by_type[kind]["backward"] += float(backward[:, i].mean())
        by_type[kind]["layers"] += 1
    digest = hashlib.sha256()
    for name in outputs:
        digest.update(np.ascontiguousarray(net.blobs[name].data).tobytes())
    gradient = hashlib.sha256(np.ascontiguousarray(net.blobs["blur"].diff).tobytes())
    return {"caffe": str(caffe_prefix(caffe)), "types": dict(by_type),
            "output_sha256": digest.hexdigest(), "input_grad_sha256": gradient.hexdigest(),
            "threads": os.environ.get("OMP_NUM_THREADS", "default")}


def run_build(prefix: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    """Profile in a child process whose pycaffe comes from ``prefix`` (None: this Python's)."""
    return run_script_with_build(prefix, __file__, ["--child", "--variant", args.variant, "--size", args.size,
                                                    "--batch", str(args.batch), "--repeats", str(args.repeats)], REPO)


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: per layer type, forward/backward ms and share of each build; the first build's time over the last's."""
    kinds = sorted(results[0]["types"], key=lambda k: -(results[0]["types"][k]["forward"]
                                                         + results[0]["types"][k]["backward"]))
    header = ["layer type", "layers"]
    for i, _ in enumerate(results):
        header += [f"fwd ms [{i}]", f"fwd % [{i}]", f"bwd ms [{i}]", f"bwd % [{i}]"]
    if len(results) > 1:
        header += ["fwd speed-up", "bwd speed-up"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    totals = [{p: sum(t[p] for t in r["types"].values()) for p in ("forward", "backward")} for r in results]
    for kind in [*kinds, "total"]:
        row = [kind, str(results[0]["types"][kind]["layers"]) if kind != "total" else ""]
        for r, total in zip(results, totals, strict=True):
            cell = total if kind == "total" else r["types"].get(kind, {"forward": 0.0, "backward": 0.0})
            row += [f"{1e3 * cell['forward']:.1f}", f"{100 * cell['forward'] / total['forward']:.1f}",
                    f"{1e3 * cell['backward']:.1f}", f"{100 * cell['backward'] / total['backward']:.1f}"]
        if len(results) > 1:
            first = totals[0] if kind == "total" else results[0]["types"][kind]
            last = totals[-1] if kind == "total" else results[-1]["types"].get(kind)
            row += [f"{first[p] / last[p]:.2f}x" if last and last[p] > 0 else "-" for p in ("forward", "backward")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="mrfnet", help="refinenet, lwrefinenet, rcrefinenet or mrfnet")
    parser.add_argument("--size", default="256x256", help="input WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=1, help="images per pass (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes after one warm-up (default: %(default)s)")
    parser.add_argument("--caffe", type=Path, action="append", default=[],
                        help="a Caffe prefix of tools/install_caffe.sh (give two to compare them; default: this "
                             "Python's pycaffe)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if min(width, height, args.batch, args.repeats) < 1:
        parser.error("--size, --batch and --repeats must be positive")
    if args.child:
        print(json.dumps(profile(args.variant, height, width, args.batch, args.repeats)))
        return 0
    results = [run_build(prefix, args) for prefix in (args.caffe or [None])]
    print(f"{args.variant} at {args.size}, batch {args.batch}, mean of {args.repeats} passes per layer")
    for i, r in enumerate(results):
        print(f"[{i}] {r['caffe']} (OMP_NUM_THREADS={r['threads']})")
    print()
    print(table(results))
    if len(results) > 1:
        same_out = len({r["output_sha256"] for r in results}) == 1
        same_grad = len({r["input_grad_sha256"] for r in results}) == 1
        print(f"\noutputs bit-identical: {'yes' if same_out else 'NO'}; input gradients bit-identical: "
              f"{'yes' if same_grad else 'NO'}")
    if args.out:
        args.out.write_text(json.dumps({"settings": vars(args) | {"caffe": [str(p) for p in args.caffe],
                                                                  "out": str(args.out)},
                                        "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
