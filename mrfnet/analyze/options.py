"""`mrfnet time`'s options, each described once as a dataclass field (data_prep.option_fields) whose flag
mrfnet.runtime.options generates; its defaults are time_variants' own (mrfnet.analyze.timing)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from data_prep.option_fields import non_negative_int, option, positive_float, positive_int
from mrfnet.analyze.timing import (
    DEFAULT_MEMORY_BATCHES,
    DEFAULT_MEMORY_SIDE,
    DEFAULT_REPEATS,
    DEFAULT_SIZES,
    DEFAULT_WARMUP,
)
from mrfnet.export.engines import ENGINES
from mrfnet.export.options import gpu_option
from mrfnet.infer.tiling import DEFAULT_OVERLAP
from netgen.sizes import parse_sizes, size_label


def size_list(text: str) -> list[tuple[int, int]]:
    """--sizes: WIDTHxHEIGHT,... as (height, width) pairs, refused by the parser when malformed."""
    try:
        return parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def batch_list(text: str) -> list[int]:
    """Comma-separated positive batch sizes, checked before any timing work."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes are positive integers, got {text!r}")
    return values


@dataclass(frozen=True)
class TimeOptions:
    """What `mrfnet time` measures and how (the variants: the --variants list that netgen shares)."""

    sizes: Sequence[tuple[int, int]] = option(
        DEFAULT_SIZES, "inference sizes, WIDTHxHEIGHT, comma-separated (default: "
                       f"{','.join(size_label(*size) for size in DEFAULT_SIZES)})", parse=size_list)
    repeats: int = option(DEFAULT_REPEATS, "timed passes per size", parse=positive_int)
    warmup: int = option(DEFAULT_WARMUP, "untimed passes first", parse=non_negative_int)
    memory_batches: Sequence[int] = option(
        DEFAULT_MEMORY_BATCHES, "batch sizes of the training-memory table (default: "
                                f"{','.join(map(str, DEFAULT_MEMORY_BATCHES))})", parse=batch_list)
    memory_side: int = option(DEFAULT_MEMORY_SIDE, "square input side of the training-memory table (default: "
                                                   "%(default)s, the paper's crop)", parse=positive_int)
    max_memory_gb: float | None = option(None, "largest counted memory run whole (default: half the memory "
                                               "available now)", parse=positive_float)
    tile_memory_gb: float | None = option(None, "budget of the tiles used when a size does not fit (default: "
                                                "--max-memory-gb)", parse=positive_float)
    overlap: int = option(DEFAULT_OVERLAP, "tile overlap", parse=non_negative_int)
    no_caffe_time: bool = option(False, "skip Caffe's own `caffe time` runs")
    engine: str = option("caffe", "what runs inference: caffe, or onnxruntime on each net's ONNX export (inference "
                                  "only: the training-memory table and `caffe time` are left out)", choices=ENGINES)
    gpu: int | None = gpu_option()
    out: Path | None = option(None, "folder for timing.md and timing.json (default: print only)", parse=Path)
