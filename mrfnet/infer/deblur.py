"""Deblurring image files and folders with a loaded model, keeping each image's form (alpha, 16 bits)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from data_prep.images import FROM_16_BIT, IMAGE_SUFFIXES, LoadedImage, load_image, warn_left_out, write_png
from mrfnet.infer.model import Engine, resolve_tile
from mrfnet.infer.tiling import DEFAULT_MAX_MEMORY_GB, DEFAULT_OVERLAP

log = logging.getLogger(__name__)


def read_image(path: str | Path) -> LoadedImage:
    """An input image to deblur (data_prep.images' one reader), with a word when 16 bits become 8."""
    image = load_image(path)
    if FROM_16_BIT in image.notes:
        log.warning("%s is 16-bit: deblurring it as 8-bit and writing 8 bits", path)
    return image


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
        if target.exists() and os.path.samefile(source, target):  # the input itself, a symlink or a hard link
            raise ValueError(f"output {target} would overwrite the input (it is the same file)")
        return [(source, target)]
    if target.exists() and not target.is_dir():
        raise ValueError(f"input {source} is a folder, so the output {target} must be a folder, not a file")
    if target.resolve().is_relative_to(source.resolve()):
        raise ValueError(f"output folder {target} is inside the input folder {source}: choose another")
    files = sorted(p for p in source.rglob("*") if p.is_file())
    warn_left_out(source, files)
    inputs = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not inputs:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
    plan = [(path, target / path.relative_to(source).with_suffix(".png")) for path in inputs]
    seen: dict[Path, Path] = {}
    for path, out in plan:
        if out in seen:
            raise ValueError(f"{seen[out]} and {path} would both be written to {out}")
        if out.exists() and os.path.samefile(path, out):  # a hard link of the input
            raise ValueError(f"output {out} would overwrite the input {path} (it is the same file)")
        seen[out] = path
    return plan


def deblur_file(model: Engine, source: Path, target: Path, **options: Any) -> tuple[int, int]:
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


def deblur_paths(model: Engine, plan: list[tuple[Path, Path]], *, tile: int | str = "auto",
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
