"""Benchmark `mrfnet deblur` per variant and Caffe build: seconds per image, whole frame or tiles, peak RSS.

    .venv/bin/python tools/bench_inference.py [--variants mrfnet ...] [--sizes 1280x720] [--repeats 1]
        [--caffe PREFIX --caffe PREFIX ...] [--max-memory-gb GB]

Every (build, setting, variant, size) runs in its own child process, so each peak RSS is its own.
--caffe names a prefix of tools/install_caffe.sh (repeatable; default: the Caffe this Python imports).
A build with the project's lean patches runs two settings: "workspace" (the shared im2col workspace
of 0004 alone: a deploy net without share_test_blobs) and "lean" (0004 and 0005's shared TEST blobs);
any other build runs "bvlc". An image runs whole when its counted Caffe memory fits --max-memory-gb,
else in the tiles `mrfnet deblur` would pick, as `mrfnet deblur` runs it (uint8 in, padded to the
stride, uint8 out). Weights come from the prototxt's fillers (speed does not depend on them); time is
the mean of --repeats calls after one warm-up call. A benchmark, not a test: numbers depend on the
machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mrfnet.infer.memory import lean_caffe
from mrfnet.infer.model import Model, resolve_tile
from mrfnet.infer.tiling import DEFAULT_OVERLAP, pad_to_stride, tile_shape
from mrfnet.runtime.caffe_env import caffe_prefix, import_caffe, run_script_with_build
from mrfnet.runtime.machine import default_max_memory_gb, describe_machine, machine_info
from netgen.sizes import parse_sizes, size_label

REPO = Path(__file__).resolve().parents[1]
MB = 2**20


def settings_of_this_build() -> list[str]:
    """The settings the Caffe this process imports can run."""
    from caffe.proto import caffe_pb2

    lean = "share_test_blobs" in caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name
    return ["workspace", "lean"] if lean else ["bvlc"]


def bench(variant: str, setting: str, height: int, width: int, repeats: int, max_memory_gb: float,
          overlap: int) -> dict[str, Any]:
    """In this (child) process: seconds per deblurred image, the pass used, counted memory, peak RSS."""
    from netgen import build_deploy

    with tempfile.TemporaryDirectory() as tmp:
        deploy = Path(tmp) / "deploy.prototxt"
        deploy.write_text(str(build_deploy(variant, share_blobs=setting == "lean")))
        model = Model(deploy)
        if lean_caffe(model.net) != (setting != "bvlc"):
            raise SystemExit(f"setting {setting} does not match the Caffe at {caffe_prefix(import_caffe())}")
        estimate = model.memory()
        side = model.net.blobs[model.info.input_blob].data.shape[2]
        per_pixel = (estimate.total - estimate.parameters) / side**2
        tile = resolve_tile(model, "auto", overlap, max_memory_gb)
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        shape = tile_shape(tile, *pad_to_stride(image[None, :, :, 0]).shape[1:])
        model.deblur(image[:shape[0], :shape[1]] if shape else image, tile=tile, overlap=overlap)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.deblur(image, tile=tile, overlap=overlap)
            times.append(time.perf_counter() - start)
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    return {"seconds": times, "pass": f"tiles {size_label(*shape)}" if shape else "whole",
            "counted_gb": (estimate.parameters + per_pixel * height * width) / 2**30, "peak_rss": peak}


def run_child(prefix: Path | None, args: argparse.Namespace, *extra: str) -> Any:
    """This script with ``extra`` options in a child whose pycaffe comes from ``prefix``; its JSON answer."""
    return run_script_with_build(prefix, __file__, ["--repeats", str(args.repeats), "--max-memory-gb",
                                                    str(args.max_memory_gb), "--overlap", str(args.overlap),
                                                    *extra], REPO)


def main() -> None:
    from netgen import VARIANTS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--sizes", default="1280x720", help="WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-memory-gb", type=float, default=default_max_memory_gb(),
                        help="Caffe memory for one pass; larger images are tiled (default: half the memory "
                             "available: %(default)s)")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
    parser.add_argument("--caffe", type=Path, action="append", default=[],
                        help="a tools/install_caffe.sh prefix to run (repeatable; default: this Python's Caffe)")
    parser.add_argument("--child", nargs=4, metavar=("VARIANT", "SETTING", "HEIGHT", "WIDTH"), help=argparse.SUPPRESS)
    parser.add_argument("--list-settings", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.list_settings:
        print(json.dumps({"settings": settings_of_this_build(), "prefix": str(caffe_prefix(import_caffe()))}))
        return
    if args.child:
        variant, setting, height, width = args.child
        print(json.dumps(bench(variant, setting, int(height), int(width), args.repeats, args.max_memory_gb,
                               args.overlap)))
        return
    builds = [(prefix, run_child(prefix, args, "--list-settings")) for prefix in (args.caffe or [None])]
    print(f"machine: {describe_machine(machine_info())}")
    print(f"deblur, seconds per image (mean of {args.repeats} after a warm-up); one pass when the counted "
          f"Caffe memory fits {args.max_memory_gb} GB, else tiles (overlap {args.overlap})")
    for build in builds:
        print(f"build {build[1]['prefix']}: settings {', '.join(build[1]['settings'])}")
    print("\n| size | variant | setting | pass | counted GB | seconds | peak RSS MB | time vs first | RSS vs first |")
    print("|---|---|---|---|---|---|---|---|---|")
    for height, width in parse_sizes(args.sizes):
        for variant in args.variants:
            first = None
            for prefix, found in builds:
                for setting in found["settings"]:
                    got = run_child(prefix, args, "--child", variant, setting, str(height), str(width))
                    seconds, rss = float(np.mean(got["seconds"])), got["peak_rss"] / MB
                    first = first or (seconds, rss)
                    print(f"| {size_label(height, width)} | {variant} | {setting} | {got['pass']} | "
                          f"{got['counted_gb']:.2f} | {seconds:.2f} | {rss:.0f} | {first[0] / seconds:.2f}x | "
                          f"{rss / first[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
