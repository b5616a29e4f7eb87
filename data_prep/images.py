"""THE image reader, finder and folder pairer: data_prep, score and deblur read images through it.

One rule for every reader (docs/architecture.md, "Images"): files are read as bytes and decoded by
OpenCV (clear errors, any file name); 16-bit samples are rounded to 8 bits as x * 255 / 65535, half
up; grey images are replicated to BGR (and remembered, so deblur writes grey back); an alpha channel
is set aside (deblur writes it back unchanged). Datasets (data-prep's pairs, score's folders) refuse
transparent pixels: their colour is not what anyone sees. Outputs are PNG only (lossless).
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from data_prep.atomic import atomic_output, write_atomic
from data_prep.errors import DataError, MissingData

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
ANIMATION_SUFFIXES = (".gif",)  # left out of folder scans, and said so
MULTI_FRAME_SUFFIXES = (".gif", ".png", ".tif", ".tiff", ".webp")  # animations (APNG, WebP) and multi-page TIFF
# The conversions load_image records (data-prep writes them into meta_info; deblur warns on 16 bits)
FROM_16_BIT, FROM_GREY, ALPHA_SET_ASIDE = "16-bit rounded to 8-bit", "grayscale replicated to BGR", "alpha set aside"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: grey, RGB, RGBA (8 bits each)


class ImageError(DataError):
    """An image file that cannot be used as it is; the message names the file."""


@dataclass(frozen=True)
class LoadedImage:
    """An image as the nets take it (H x W x 3 uint8 BGR), what it was converted from, and its alpha."""

    bgr: np.ndarray
    alpha: np.ndarray | None = None
    grey: bool = False
    notes: tuple[str, ...] = ()


def load_image(path: str | Path) -> LoadedImage:
    """Read any 8/16-bit grey, BGR or BGRA image file; :class:`ImageError` naming the file if it cannot be used."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # not cv2.imread: clear errors, any file name
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageError(f"cannot read image {path}: not decodable (empty, corrupt or truncated file)")
    frames = _frame_count(path) if path.suffix.lower() in MULTI_FRAME_SUFFIXES else 1
    if frames > 1:  # OpenCV would silently take the first frame
        raise ImageError(f"image {path} has {frames} frames (an animation or a multi-page file): save the frame "
                         "you want as an image of its own")
    notes = []
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        notes.append(FROM_16_BIT)
    elif image.dtype != np.uint8:
        raise ImageError(f"image {path} has {image.dtype} samples; only 8- and 16-bit images are supported")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        notes.append(FROM_GREY)
        return LoadedImage(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), grey=True, notes=tuple(notes))
    if image.shape[2] == 4:
        notes.append(ALPHA_SET_ASIDE)
        return LoadedImage(np.ascontiguousarray(image[:, :, :3]), alpha=image[:, :, 3].copy(), notes=tuple(notes))
    if image.shape[2] != 3:
        raise ImageError(f"image {path} has {image.shape[2]} channels; expected 1, 3 or 4")
    return LoadedImage(image, notes=tuple(notes))


def _frame_count(path: Path) -> int:
    """Frames (pages) in the file by its header; 1 where PIL cannot tell (OpenCV decoded it already)."""
    try:
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 1


def read_image(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """A dataset image as H x W x 3 uint8 BGR and the conversions it needed; transparent pixels are refused."""
    image = load_image(path)
    if image.alpha is not None and image.alpha.min() < 255:
        raise ImageError(f"image {path} has transparent pixels; flatten it onto a background first")
    notes = [note if note != ALPHA_SET_ASIDE else "opaque alpha dropped" for note in image.notes]
    return image.bgr, notes


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a PNG (lossless: outputs are never saved as JPEG), creating its folder; whole or not at all
    (data_prep.atomic: DiskFull on a full disk, an older file of that name kept)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"{path}: images are written as PNG only (lossless), not {path.suffix or 'no suffix'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"OpenCV could not encode {path}")
    return write_atomic(path, encoded.tobytes())  # not cv2.imwrite: any file name, whole or not at all


def write_png_bands(path: str | Path, height: int, width: int, channels: int,
                    bands: Iterable[np.ndarray]) -> Path:
    """Write a PNG from its rows, band by band (grey, BGR or BGRA uint8, top to bottom), never holding the
    whole image or its encoding: what deblur writes huge outputs with (issue 24). Whole or not at all, as
    :func:`write_png` (data_prep.atomic.atomic_output: a hidden sibling, fsync, rename; DiskFull on a full disk).

    Encoded as OpenCV encodes PNGs (the Sub filter, zlib level 1, run-length strategy), so files are as
    large as :func:`write_png`'s.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"{path}: images are written as PNG only (lossless), not {path.suffix or 'no suffix'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as partial, open(partial, "wb") as file:
        file.write(PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(
            ">IIBBBBB", width, height, 8, PNG_COLOUR_TYPES[channels], 0, 0, 0)))
        compressor = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
        written = 0
        for band in bands:
            if band.shape[1:] != ((width,) if channels == 1 else (width, channels)):
                raise DataError(f"{path}: a band of shape {band.shape} in a PNG {width} wide with {channels} channels")
            encoded = compressor.compress(_sub_filtered(band, channels))
            if encoded:
                file.write(_png_chunk(b"IDAT", encoded))
            written += band.shape[0]
        if written != height:
            raise DataError(f"{path}: {written} rows given for a PNG {height} rows high")
        file.write(_png_chunk(b"IDAT", compressor.flush()) + _png_chunk(b"IEND", b""))
    return path


def _sub_filtered(band: np.ndarray, channels: int) -> np.ndarray:
    """PNG scanlines of a band: the filter-type byte 1 (Sub: each byte minus the one a pixel before, modulo
    256) and the row in PNG's channel order (RGB(A), not OpenCV's BGR(A))."""
    rows = band.reshape(band.shape[0], band.shape[1], channels)
    if channels > 1:
        rows = rows[:, :, [2, 1, 0, 3][:channels]]
    lines = np.empty((rows.shape[0], 1 + rows.shape[1] * channels), np.uint8)
    lines[:, 0] = 1
    pixels = lines[:, 1:].reshape(rows.shape)
    pixels[:, 0] = rows[:, 0]
    np.subtract(rows[:, 1:], rows[:, :-1], out=pixels[:, 1:])
    return lines


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file's header, without decoding its pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # bad headers; >178 Mpixels
        raise ImageError(f"cannot read image {path}: {exc}") from exc
    return height, width


def image_key(relative: str) -> str:
    """What pairs a blurred file with its sharp partner: the relative path without its suffix (a.png, a.jpg)."""
    return Path(relative).with_suffix("").as_posix()


def item_name(relative: str) -> str:
    """A record name from a relative path: its :func:`image_key` with folders joined by '_' (no '/' in keys)."""
    return image_key(relative).replace("/", "_")


def warn_left_out(folder: Path, files: list[Path]) -> None:
    """Say which GIFs a folder scan leaves out (issue 24: they were dropped without a word)."""
    animations = [path.name for path in files if path.suffix.lower() in ANIMATION_SUFFIXES]
    if animations:
        log.warning("%d GIF file(s) under %s left out (GIFs are not read; save the frame you want as PNG): %s",
                    len(animations), folder, ", ".join(animations[:5]) + (", ..." if len(animations) > 5 else ""))


def find_images(folder: Path) -> dict[str, Path]:
    """Image files under ``folder`` by relative POSIX path, sorted; an error if there are none."""
    if not folder.is_dir():
        raise MissingData(f"no folder {folder}")
    files = [path for path in sorted(folder.rglob("*")) if path.is_file()]
    found = {path.relative_to(folder).as_posix(): path for path in files if path.suffix.lower() in IMAGE_SUFFIXES}
    if not found:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    warn_left_out(folder, files)
    names: dict[str, str] = {}
    for relative in found:
        other = names.setdefault(item_name(relative), relative)
        if other != relative:
            raise DataError(f"{folder / other} and {folder / relative} would get the same record name")
    return found


def match_pairs(blur: dict[str, Path], sharp: dict[str, Path]) -> list[tuple[str, Path, Path]]:
    """(sharp relative path, blur file, sharp file) for files present on both sides, paired by
    :func:`image_key` (find_images has made keys unique per side); any file without a partner is an error."""
    blur_by_key = {image_key(relative): path for relative, path in blur.items()}
    sharp_keys = {image_key(relative) for relative in sharp}
    unmatched = ([f"{path} (no blurred partner)" for relative, path in sharp.items()
                  if image_key(relative) not in blur_by_key]
                 + [f"{path} (no sharp partner)" for relative, path in blur.items()
                    if image_key(relative) not in sharp_keys])
    if unmatched:
        more = f" and {len(unmatched) - 10} more" if len(unmatched) > 10 else ""
        raise DataError(f"{len(unmatched)} image(s) without a partner of the same relative path: "
                         f"{', '.join(unmatched[:10])}{more}")
    return [(relative, blur_by_key[image_key(relative)], path) for relative, path in sharp.items()]
