"""Deblurring image files and folders with a loaded model, keeping each image's form (alpha, 16 bits)."""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from data_prep.atomic import reporting_no_room
from data_prep.images import FROM_16_BIT, IMAGE_SUFFIXES, LoadedImage, load_image, warn_left_out, write_png_bands
from mrfnet.infer.image_memory import gigabytes, give_back_freed_memory, read_header, resident_bytes
from mrfnet.infer.model import Engine, resolve_tile
from mrfnet.infer.tiling import (
    BLENDS,
    DEFAULT_MAX_MEMORY_GB,
    DEFAULT_OVERLAP,
    PROGRESS_TILES,
    TILE_BYTES_PER_PIXEL,
    WAITING_BYTES_PER_PIXEL,
    AutoTile,
    Tile,
    blend_bytes,
    checked_shape,
    deblur_with,
    padded_size,
    tile_count,
)
from mrfnet.runtime.errors import InvalidValue, MissingInput

log = logging.getLogger(__name__)

IN_MEMORY_SHARE = 0.5  # input and output may take this share of the budget in memory; a larger output is staged
WRITE_BYTES = 2**20  # output rows encoded at a time
SAY_DECODING_BYTES = 2**28  # an image whose decoding takes more than this is announced (it takes seconds)
FIRST_USE_BYTES = 2**26  # held back for what the libraries take once images flow (code, caches): 20-35 MB measured
FORWARD_MARGIN = 1.05  # on the net's memory estimate (measured within 2% from 0.4 to 1.8 GB of tiles)


class TooLarge(InvalidValue):
    """An image that cannot be deblurred within --max-memory-gb (said before it is decoded)."""


def read_image(path: str | Path) -> LoadedImage:
    """An input image to deblur (data_prep.images' one reader), with a word when 16 bits become 8."""
    image = load_image(path)
    if FROM_16_BIT in image.notes:
        log.warning("%s is 16-bit: deblurring it as 8-bit and writing 8 bits", path)
    return image


def restore_form(output: np.ndarray, source: LoadedImage, top: int = 0) -> np.ndarray:
    """Deblurred BGR rows (from row ``top`` of the image) in the input's form: grey again, or with their
    alpha channel back."""
    if source.grey:
        return cv2.cvtColor(output, cv2.COLOR_BGR2GRAY)
    if source.alpha is not None:
        return np.dstack([output, source.alpha[top:top + output.shape[0]]])
    return output


def plan_outputs(source: str | Path, target: str | Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs for IN and OUT, checked before any work: PNG outputs, no clashes."""
    source, target = Path(source), Path(target)
    if not source.exists():
        raise MissingInput(f"input {source} does not exist")
    if source.is_file():
        if target.is_dir() or target.suffix == "":
            return [(source, target / f"{source.stem}.png")]
        if target.suffix.lower() != ".png":
            raise InvalidValue(f"output {target}: outputs are written as PNG (lossless), give a .png name or a folder")
        if target.exists() and os.path.samefile(source, target):  # the input itself, a symlink or a hard link
            raise InvalidValue(f"output {target} would overwrite the input (it is the same file)")
        return [(source, target)]
    if target.exists() and not target.is_dir():
        raise InvalidValue(f"input {source} is a folder, so the output {target} must be a folder, not a file")
    if target.resolve().is_relative_to(source.resolve()):
        raise InvalidValue(f"output folder {target} is inside the input folder {source}: choose another")
    files = sorted(p for p in source.rglob("*") if p.is_file())
    warn_left_out(source, files)
    inputs = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not inputs:
        raise InvalidValue(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
    plan = [(path, target / path.relative_to(source).with_suffix(".png")) for path in inputs]
    seen: dict[Path, Path] = {}
    for path, out in plan:
        if out in seen:
            raise InvalidValue(f"{seen[out]} and {path} would both be written to {out}")
        if out.exists() and os.path.samefile(path, out):  # a hard link of the input
            raise InvalidValue(f"output {out} would overwrite the input {path} (it is the same file)")
        seen[out] = path
    return plan


class Pixels:
    """The deblurred uint8 BGR output while it is made, in memory: blocks in as the tiles finish them (their
    smallest and largest value noted, for the flat-output check), rows out as the PNG is encoded."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.low, self.high = 255, 0
        self.array = np.empty((height, width, 3), np.uint8)

    def put(self, y: int, x: int, block: np.ndarray) -> None:
        self.low, self.high = min(self.low, int(block.min())), max(self.high, int(block.max()))
        self.store(y, x, block)

    def store(self, y: int, x: int, block: np.ndarray) -> None:
        self.array[y:y + block.shape[0], x:x + block.shape[1]] = block

    def rows(self, top: int, bottom: int) -> np.ndarray:
        return self.array[top:bottom]

    def close(self) -> None:
        """Nothing to release here: the array goes with the object (the staged kind closes its file)."""


class StagedPixels(Pixels):
    """:class:`Pixels` in a temporary file in ``folder`` (beside the output), not in memory: for an output
    too large to hold beside the input within the budget. The file has no name (``tempfile.TemporaryFile``:
    O_TMPFILE, or unlinked at once), so nothing is left behind however the process ends; it is read and
    written with pread/pwrite, not mapped, so its pages do not count in the process's memory."""

    def __init__(self, height: int, width: int, folder: Path) -> None:
        self.height, self.width = height, width
        self.low, self.high = 255, 0
        self.file = tempfile.TemporaryFile(dir=folder, prefix=".mrfnet-deblur-")
        self.file.truncate(height * width * 3)

    def store(self, y: int, x: int, block: np.ndarray) -> None:
        for k, row in enumerate(np.ascontiguousarray(block)):
            if os.pwrite(self.file.fileno(), row, ((y + k) * self.width + x) * 3) != row.nbytes:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a short write: no room for the rest

    def rows(self, top: int, bottom: int) -> np.ndarray:
        rows = np.empty((bottom - top, self.width, 3), np.uint8)
        if os.preadv(self.file.fileno(), [rows], top * self.width * 3) != rows.nbytes:
            raise OSError(f"the staged output of {self.height} rows ended before row {bottom}")
        return rows

    def close(self) -> None:
        self.file.close()


@dataclass(frozen=True)
class ImagePlan:
    """How one image is deblurred within the budget: its tiles, and whether its output is staged on disk."""

    tile: Tile
    staged: bool


def plan_image(model: Engine, tile: Tile, height: int, width: int, held: int, *, overlap: int = DEFAULT_OVERLAP,
               max_memory_gb: float = DEFAULT_MAX_MEMORY_GB, base: int = 0, decode: int = 0,
               name: str = "the image") -> ImagePlan:
    """Fit one ``height`` x ``width`` image, whose decoded input (and alpha) take ``held`` bytes, into
    ``max_memory_gb`` (issue 24: a 20000x20000 photo took 11.1 GB against 4).

    The budget is the process's: ``base``, what it holds before any image (Python, the libraries, the
    model loaded) and :data:`FIRST_USE_BYTES`, comes off it first. The rest covers the input, the output
    (uint8, in memory while input and output together take at most :data:`IN_MEMORY_SHARE` of it, else
    staged in a temporary file), the blending's float32 buffers (:func:`mrfnet.infer.tiling.blend_bytes`)
    and what the net's forward takes (its estimate, with :data:`FORWARD_MARGIN`), which sets the size of
    ``"auto"`` tiles (an :class:`AutoTile`). Given tiles (an int, or None) are kept as they are.
    :class:`TooLarge` where the decoding (``decode`` bytes, from the file's header) or, with auto tiles,
    the input beside the smallest tiles does not fit: said before anything is decoded.
    """
    budget = max_memory_gb * 2**30 - base
    room = f"--max-memory-gb {max_memory_gb:g} leaves {gigabytes(max(budget, 0))} for it" + (
        f" beside the {gigabytes(base)} this process takes before any image" if base else "")
    advice = "give a larger --max-memory-gb, or cut the image into parts"
    if decode > budget:
        raise TooLarge(f"{name} ({width}x{height}) needs about {gigabytes(decode)} to decode, and {room}: {advice}")
    output = height * width * 3
    staged = held + output > IN_MEMORY_SHARE * budget
    if not isinstance(tile, AutoTile):
        return ImagePlan(tile, staged)
    kept = held + (0 if staged else output) + WRITE_BYTES * 3
    fixed, per_pixel = model.forward_costs()
    fixed, per_pixel = 0 if base else fixed, per_pixel * FORWARD_MARGIN  # the weights: loaded, so in ``base``
    padded = padded_size(height, width)
    auto = AutoTile(int(max(budget - kept - fixed, 0.0) / per_pixel), overlap)
    while True:  # the largest tiles whose forward and blending fit beside what is kept
        shape = auto.shape_for(*padded)
        pixels = padded[0] * padded[1] if shape is None else shape[0] * shape[1]
        need = kept + fixed + pixels * per_pixel + blend_bytes(height, width, shape, overlap)
        if need <= budget:
            break
        if shape is not None and pixels > auto.max_pixels:  # the smallest tiles, and they do not fit
            raise TooLarge(f"{name} ({width}x{height}) needs about {gigabytes(need)} even in the smallest tiles "
                           f"({shape[1]}x{shape[0]}), and {room}: {advice}")
        cost = per_pixel + TILE_BYTES_PER_PIXEL + WAITING_BYTES_PER_PIXEL  # the tile's share of the need
        smaller = min(int(auto.max_pixels * 0.95), auto.max_pixels - int((need - budget) / cost))
        auto = AutoTile(max(smaller, 0), overlap)
    return ImagePlan(auto, staged)


def deblur_file(model: Engine, source: Path, target: Path, *, tile: Tile = None, overlap: int = DEFAULT_OVERLAP,
                max_memory_gb: float = DEFAULT_MAX_MEMORY_GB, base: int = 0) -> tuple[int, int]:
    """Deblur one image file into a PNG within ``max_memory_gb`` (:func:`plan_image`; ``base`` bytes of it
    are the process's own); returns its (height, width).

    An image that cannot fit is refused from its header (:func:`read_header`), before it is decoded: the
    reader decodes whole images (OpenCV, as PIL, has no row-by-row decoding). The output is made block by
    block (:func:`mrfnet.infer.tiling.deblur_with`) and written band by band
    (:func:`data_prep.images.write_png_bands`): whole or not at all, whatever stops the process.
    """
    header = read_header(source)
    if header is not None:
        plan_image(model, tile, header.height, header.width, header.held, overlap=overlap,
                   max_memory_gb=max_memory_gb, base=base, decode=header.decode_bytes, name=str(source))
        if header.decode_bytes > SAY_DECODING_BYTES:
            log.info("%s: decoding %dx%d (about %s)", source.name, header.width, header.height,
                     gigabytes(header.decode_bytes))
    image = read_image(source)
    height, width = image.bgr.shape[:2]
    held = image.bgr.nbytes + (0 if image.alpha is None else image.alpha.nbytes)
    plan = plan_image(model, tile, height, width, held, overlap=overlap, max_memory_gb=max_memory_gb, base=base,
                      name=str(source))
    shape = checked_shape(plan.tile, image.bgr, overlap, BLENDS[0])
    tiles = tile_count(height, width, shape, overlap)
    if tiles > 1:
        log.info("%s: %dx%d in %d tiles of %dx%d%s", source.name, width, height, tiles, shape[1], shape[0],
                 ", the output staged in a temporary file" if plan.staged else "")
    folder = next(parent for parent in target.parents if parent.exists())  # the staged file's: no folder made yet
    with reporting_no_room(target):  # a full disk while staging or writing: one line naming the output
        pixels = StagedPixels(height, width, folder) if plan.staged else Pixels(height, width)
        try:
            deblur_with(model.forward, image.bgr, pixels.put, tile=shape, overlap=overlap, progress=source.name)
            if pixels.low == pixels.high and image.bgr.min() != image.bgr.max():
                log.warning("%s: the output is one flat colour (%d) though the input is not: the model is "
                            "degenerate", target, pixels.low)
            if not target.parent.exists():
                log.info("creating output folder %s", target.parent)
            with tqdm(total=height, desc=f"{source.name} (writing)", unit="row", leave=False,
                      disable=tiles < PROGRESS_TILES) as bar:
                write_png_bands(target, height, width, 1 if image.grey else 3 + (image.alpha is not None),
                                output_bands(pixels, image, bar))
        finally:
            pixels.close()
    return height, width


def output_bands(pixels: Pixels, source: LoadedImage, bar: tqdm | None = None) -> Iterator[np.ndarray]:
    """The output's rows in bands of about :data:`WRITE_BYTES`, in the input's form (:func:`restore_form`),
    counted on ``bar`` as they are taken."""
    step = max(1, WRITE_BYTES // (pixels.width * 3))
    for top in range(0, pixels.height, step):
        band = restore_form(pixels.rows(top, min(top + step, pixels.height)), source, top)
        yield band
        if bar is not None:
            bar.update(band.shape[0])


def deblur_paths(model: Engine, plan: list[tuple[Path, Path]], *, tile: int | str = "auto",
                 overlap: int = DEFAULT_OVERLAP, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB
                 ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Deblur every (input, output) pair of ``plan`` with a progress bar, within ``max_memory_gb`` of this
    process's resident memory, what it holds already (:func:`resident_bytes`, the model loaded) and
    :data:`FIRST_USE_BYTES` included; freed buffers go back to the system (:func:`give_back_freed_memory`).

    Returns the outputs written and the inputs that could not be read or do not fit (with why): one such
    image of a folder does not stop the others.
    """
    give_back_freed_memory()
    base = resident_bytes() + FIRST_USE_BYTES
    if base >= max_memory_gb * 2**30:
        raise InvalidValue(f"--max-memory-gb {max_memory_gb:g} is less than the {gigabytes(base)} this process "
                           "takes before any image (Python, its libraries and the model): give more")
    log.debug("%s of --max-memory-gb %g is this process's before any image", gigabytes(base), max_memory_gb)
    side = resolve_tile(model, tile, overlap, max_memory_gb - base / 2**30)
    written, failed = [], []
    for source, target in tqdm(plan, desc="deblur", unit="image", disable=len(plan) < 2):
        try:
            deblur_file(model, source, target, tile=side, overlap=overlap, max_memory_gb=max_memory_gb, base=base)
        except ValueError as exc:
            if len(plan) == 1:
                raise
            log.warning("skipping %s: %s", source, exc)
            failed.append((source, str(exc)))
            continue
        written.append(target)
    return written, failed
