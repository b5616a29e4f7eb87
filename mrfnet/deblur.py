"""`mrfnet deblur IN OUT [--model MODEL]`: deblur one image or a folder of images, any size.

Without --model it uses the main job's trained MRFNet (the headline run of `mrfnet reproduce`, in
its default work folder), so `bash tools/bootstrap.sh demo` followed by `mrfnet deblur photo.jpg
out.png` works as it is.

MODEL is a run folder (its latest snapshot and deploy.prototxt) or a .caffemodel (with
``--deploy``, ``--variant``, or the deploy.prototxt of the run folder it sits in).

IN is an image file or a folder (searched recursively). For a file, OUT is the output .png, or a
folder to write ``<stem>.png`` into; for a folder, OUT is a folder that mirrors IN's sub-folders.
Missing output folders are created. Outputs are always PNG (lossless); any other suffix is an error.

Images keep their form: a grey image is deblurred as three equal channels and written back grey;
an alpha channel is set aside and written back unchanged; 16-bit images are scaled to 8 bits
(the network was trained on 8-bit data) and written as 8-bit. Any size works: sides are padded up
to a multiple of 8 (so even a 1x1 image) and cropped back, and images larger than the tile (auto:
the largest that fits ``--max-memory-gb`` of Caffe memory) are processed in overlapping tiles.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from mrfnet.inference import DEFAULT_MAX_MEMORY_GB, DEFAULT_OVERLAP, Model, resolve_tile
from mrfnet.montage import write_png
from mrfnet.reproduce import main_job_model
from mrfnet.score import IMAGE_SUFFIXES, add_inference_arguments, parse_tile, resolve_model
from mrfnet.train import SNAPSHOT_DIR

log = logging.getLogger(__name__)


@dataclass
class LoadedImage:
    """An input as the net takes it (uint8 BGR) plus what is needed to write the output in the same form."""

    bgr: np.ndarray
    alpha: np.ndarray | None = None
    grey: bool = False


def read_image(path: str | Path) -> LoadedImage:
    """Read any 8/16-bit grey, BGR or BGRA image; ValueError naming the file if it cannot be used."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot read image {path} (missing, corrupt or not an image)")
    if image.dtype == np.uint16:
        log.warning("%s is 16-bit: deblurring it as 8-bit and writing 8 bits", path)
        image = np.clip(np.rint(image / 257.0), 0, 255).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: {image.dtype} images are not supported (8- or 16-bit only)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return LoadedImage(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), grey=True)
    if image.shape[2] == 4:
        return LoadedImage(np.ascontiguousarray(image[:, :, :3]), alpha=image[:, :, 3].copy())
    if image.shape[2] == 3:
        return LoadedImage(image)
    raise ValueError(f"{path}: images with {image.shape[2]} channels are not supported")


def restore_form(output: np.ndarray, source: LoadedImage) -> np.ndarray:
    """The deblurred BGR output in the input's form: grey again, or with its alpha channel back."""
    if source.grey:
        return cv2.cvtColor(output, cv2.COLOR_BGR2GRAY)
    if source.alpha is not None:
        return np.dstack([output, source.alpha])
    return output


def plan_outputs(source: str | Path, target: str | Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs for IN and OUT, checked before any work: PNG outputs, no clashes."""
    source, target = Path(source), Path(target)
    if not source.exists():
        raise FileNotFoundError(f"input {source} does not exist")
    if source.is_file():
        if target.is_dir() or target.suffix == "":
            return [(source, target / f"{source.stem}.png")]
        if target.suffix.lower() != ".png":
            raise ValueError(f"output {target}: outputs are written as PNG (lossless), give a .png name or a folder")
        if target.resolve() == source.resolve():
            raise ValueError(f"output {target} would overwrite the input")
        return [(source, target)]
    if target.exists() and not target.is_dir():
        raise ValueError(f"input {source} is a folder, so the output {target} must be a folder, not a file")
    if target.resolve().is_relative_to(source.resolve()):
        raise ValueError(f"output folder {target} is inside the input folder {source}: choose another")
    inputs = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not inputs:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
    plan = [(path, target / path.relative_to(source).with_suffix(".png")) for path in inputs]
    seen: dict[Path, Path] = {}
    for path, out in plan:
        if out in seen:
            raise ValueError(f"{seen[out]} and {path} would both be written to {out}")
        seen[out] = path
    return plan


def deblur_file(model: Model, source: Path, target: Path, **options: Any) -> tuple[int, int]:
    """Deblur one image file into a PNG; returns its (height, width)."""
    image = read_image(source)
    output = model.deblur(image.bgr, **options)
    if output.min() == output.max() and image.bgr.min() != image.bgr.max():
        log.warning("%s: the output is one flat colour (%d) though the input is not: the model is degenerate",
                    target, int(output.flat[0]))
    if not target.parent.exists():
        log.info("creating output folder %s", target.parent)
    write_png(target, restore_form(output, image))
    return image.bgr.shape[:2]


def deblur_paths(model: Model, plan: list[tuple[Path, Path]], *, tile: int | str = "auto",
                 overlap: int = DEFAULT_OVERLAP, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB
                 ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Deblur every (input, output) pair of ``plan`` with a progress bar.

    Returns the outputs written and the inputs that could not be read (with why): one unreadable image of
    a folder does not stop the others.
    """
    side = resolve_tile(model, tile, overlap, max_memory_gb)
    written, failed = [], []
    for source, target in tqdm(plan, desc="deblur", unit="image", disable=len(plan) < 2):
        try:
            deblur_file(model, source, target, tile=side, overlap=overlap)
        except ValueError as exc:
            if len(plan) == 1:
                raise
            log.warning("skipping %s: %s", source, exc)
            failed.append((source, str(exc)))
            continue
        written.append(target)
    return written, failed


def default_model() -> Path:
    """The main job's headline run folder; FileNotFoundError naming the command that makes it."""
    run_dir = main_job_model()
    if not any((run_dir / SNAPSHOT_DIR).glob("*_iter_*.caffemodel")):
        raise FileNotFoundError(f"no --model given and no trained main-job model at {run_dir}: run "
                                "`bash tools/bootstrap.sh demo` (or `mrfnet reproduce`) first, "
                                "or pass --model RUN_DIR|MODEL.caffemodel")
    return run_dir


def run(args: argparse.Namespace) -> int:
    plan = plan_outputs(args.input, args.output)
    model_path = args.model if args.model is not None else default_model()
    with tempfile.TemporaryDirectory(prefix="mrfnet-deblur-") as tmp:
        source = resolve_model(model_path, deploy=args.deploy, variant=args.variant, work_dir=Path(tmp),
                               last_only=True)
        iteration, weights = source.snapshots[-1]
        log.info("model %s%s, deploy %s", weights, f" (iteration {iteration})" if iteration is not None else "",
                 source.deploy)
        model = Model(source.deploy, weights, gpu=args.gpu)
        written, failed = deblur_paths(model, plan, tile=parse_tile(args.tile), overlap=args.overlap,
                                       max_memory_gb=args.max_memory_gb)
    print(f"{len(written)} of {len(plan)} image(s) written" + (f" to {written[0]}" if len(plan) == 1 else
                                                               f" under {Path(args.output)}"))
    if failed:
        print(f"{len(failed)} could not be read: " + ", ".join(str(source) for source, _ in failed[:5])
              + (", ..." if len(failed) > 5 else ""))
        return 1
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("deblur", help="deblur an image or a folder of images (any size, tiled)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", metavar="IN", type=Path, help="an image or a folder of images")
    parser.add_argument("output", metavar="OUT", type=Path, help="output .png, or a folder")
    parser.add_argument("--model", help="a run folder (its latest snapshot) or a .caffemodel (default: the main "
                        "job's MRFNet, from `mrfnet reproduce`)")
    parser.add_argument("--deploy", type=Path, help="deploy prototxt (default: the run's, or generated for --variant)")
    parser.add_argument("--variant", help="variant whose deploy net netgen generates, for a bare caffemodel")
    add_inference_arguments(parser)
    parser.set_defaults(run=run)
