"""Benchmark `mrfnet deblur`: seconds per image for each variant at 256x256 and 1280x720 on this machine.

    .venv/bin/python tools/bench_inference.py [--variants mrfnet ...] [--sizes 256x256,1280x720] [--repeats 2]

Each variant runs in its own child process (its peak RSS is its own) with weights from the
prototxt's fillers (speed does not depend on the values). An image is deblurred as `mrfnet deblur`
does it: uint8 in, pad to a multiple of 8, tiles when the image is larger than the tile that fits
--max-memory-gb of Caffe memory (whole 1280x720 images need 20-45 GB in BVLC Caffe's CPU build),
uint8 out. Time is the mean of --repeats calls after one warm-up call on a tile-sized image.
A benchmark, not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mrfnet.caffe_env import run_isolated
from mrfnet.inference import DEFAULT_OVERLAP, Model, pad_to_stride, resolve_tile, tile_shape
from mrfnet.timing import default_max_memory_gb, describe_machine, machine_info, parse_sizes, size_label


def bench_variant(variant: str, sizes: list[tuple[int, int]], repeats: int, max_memory_gb: float,
                  overlap: int) -> dict[str, Any]:
    """In a child: seconds per deblurred image at each size, the tile used, the peak RSS."""
    from netgen import build_deploy

    with tempfile.TemporaryDirectory() as tmp:
        deploy = Path(tmp) / "deploy.prototxt"
        deploy.write_text(str(build_deploy(variant)))
        model = Model(deploy)
        tile = resolve_tile(model, "auto", overlap, max_memory_gb)
        estimate = model.memory()
        per_pixel = (estimate.total - estimate.parameters) / (256 * 256)
        rng = np.random.default_rng(0)
        results, whole_gb, tiles = {}, {}, {}
        for height, width in sizes:
            label = size_label(height, width)
            whole_gb[label] = (estimate.parameters + per_pixel * height * width) / 2**30
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            shape = tile_shape(tile, *pad_to_stride(image[None, :, :, 0]).shape[1:])
            tiles[label] = size_label(*shape) if shape else "whole"
            warm = image[:shape[0], :shape[1]] if shape else image
            model.deblur(warm, tile=tile, overlap=overlap)  # warm-up: allocate the (tile's) blobs
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model.deblur(image, tile=tile, overlap=overlap)
                times.append(time.perf_counter() - start)
            results[label] = times
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    return {"seconds": results, "tiles": tiles, "peak_rss": peak, "whole_gb": whole_gb,
            "parameters": model.info.parameters}


def main() -> None:
    from netgen import VARIANTS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--sizes", default="256x256,1280x720", help="WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-memory-gb", type=float, default=default_max_memory_gb(),
                        help="Caffe memory for one pass; larger images are tiled (default: half the memory "
                             "available: %(default)s)")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("GLOG_minloglevel", "2")
    sizes = parse_sizes(args.sizes)
    labels = [size_label(h, w) for h, w in sizes]
    print(f"machine: {describe_machine(machine_info())}")
    print(f"deblur, seconds per image (mean of {args.repeats}); one pass up to {args.max_memory_gb} GB of Caffe "
          f"memory, else tiles, overlap {args.overlap}")
    header = f"{'variant':<12} {'params':>7} " + " ".join(f"{label + ' s':>14} {'tiles':>8}" for label in labels)
    header += " " + " ".join(f"{label + ' whole GB':>17}" for label in labels) + f" {'peak RSS MB':>12}"
    print(header)
    for variant in args.variants:
        found = run_isolated(bench_variant, variant, sizes, args.repeats, args.max_memory_gb, args.overlap,
                             timeout=7200)
        cells = [f"{np.mean(found['seconds'][label]):>8.3f} ±{np.std(found['seconds'][label]):>4.2f} "
                 f"{found['tiles'][label]:>8}" for label in labels]
        whole = [f"{found['whole_gb'][label]:>17.1f}" for label in labels]
        print(f"{variant:<12} {found['parameters'] / 1e6:>6.2f}M {' '.join(cells)} {' '.join(whole)} "
              f"{found['peak_rss'] / 2**20:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
