"""Option groups that several commands share (metric settings; model, tiling and memory for inference)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mrfnet.evaluate.metrics import SSIM_VARIANTS
from mrfnet.export.engines import ENGINES
from mrfnet.infer.tiling import DEFAULT_MAX_MEMORY_GB, DEFAULT_OVERLAP
from mrfnet.runtime.errors import InvalidValue
from mrfnet.runtime.values import non_negative_int, positive_float
from netgen.variants import VARIANTS


def add_metric_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics (defaults: skimage SSIM, RGB, no border crop, data range 255)")
    group.add_argument("--ssim", choices=SSIM_VARIANTS, default="skimage",
                       help="SSIM variant: skimage (Gaussian, Wang et al.), gaussian2d (BasicSR), matlab3d "
                            "(MATLAB ssim on RGB) (default: %(default)s)")
    group.add_argument("--y-channel", action="store_true", help="score the BT.601 Y channel only (default: RGB)")
    group.add_argument("--crop-border", type=non_negative_int, default=0, help="pixels cut from each side (default: 0)")


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inference")
    group.add_argument("--tile", default="auto",
                       help="tile side in pixels (a multiple of 8), 0 for whole images, or auto: the largest tile "
                            "within --max-memory-gb (default: %(default)s)")
    group.add_argument("--overlap", type=non_negative_int, default=DEFAULT_OVERLAP,
                       help="pixels shared by neighbouring tiles, a multiple of 8 (default: %(default)s)")
    group.add_argument("--max-memory-gb", type=positive_float, default=DEFAULT_MAX_MEMORY_GB,
                       help="Caffe memory budget that sets the auto tile size (default: %(default)s)")
    group.add_argument("--gpu", type=non_negative_int, help="GPU id (needs a CUDA build of Caffe; default: CPU)")
    group.add_argument("--engine", choices=ENGINES,
                       help="what runs the net: caffe, or onnxruntime on the graph `mrfnet export` writes "
                            "(default: onnxruntime for an .onnx model, else caffe)")


def parse_tile(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise InvalidValue(f"--tile takes a number of pixels, 0 or auto, not {text!r}") from None


def add_variants_argument(parser: argparse.ArgumentParser) -> None:
    """--variants: some of netgen's variants, in the order given (default: all)."""
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), metavar="VARIANT",
                        help=f"which variants (default: all of {', '.join(VARIANTS)})")


def check_writable(option: str, folder: Path) -> None:
    """Refuse ``folder`` (to be created if missing) when it cannot be written, before any work."""
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not os.access(existing, os.W_OK):
        raise InvalidValue(f"{option} {folder}: {existing} is not writable")
