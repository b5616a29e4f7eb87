"""What an image and this process take in memory, known before an image is decoded: the bytes a file's
decoding holds, from its header alone (:func:`read_header`), and the process's own resident memory, which
``mrfnet deblur``'s ``--max-memory-gb`` covers too (mrfnet.infer.deblur)."""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def resident_bytes() -> int:
    """This process's resident memory now (Linux's /proc/self/statm); 0 where it cannot be read."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def give_back_freed_memory() -> None:
    """With glibc: what the heap holds free given back to the system now (loading a model leaves ~20 MB), and
    every later allocation over 128 KB in a mapping of its own, unmapped once freed. Otherwise glibc's
    threshold rises (up to 32 MB) at the first large free, and freed buffers below it (the decoding's
    copies, a tile's arrays) stay resident in the heap, for later allocations to reuse if they fit."""
    if platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        log.debug("could not set glibc's mmap threshold")


def gigabytes(count: float) -> str:
    """Bytes as --max-memory-gb counts them (GB of 2**30 bytes), in MB of 2**20 below a tenth of one."""
    return f"{count / 2**30:.2f} GB" if count >= 0.1 * 2**30 else f"{count / 2**20:.1f} MB"


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says about the arrays OpenCV will decode it into (data_prep.images)."""

    height: int
    width: int
    channels: int  # as OpenCV decodes it: 1 (grey), 3 or 4 (with alpha)
    sample_bytes: int  # 1, or 2 for 16-bit samples
    file_bytes: int
    decoded_copies: int = 2  # decoded arrays OpenCV holds at once: its own and the NumPy one it is copied into

    @property
    def held(self) -> int:
        """Bytes of the decoded image while it is deblurred: uint8 BGR, and its alpha set aside."""
        return self.height * self.width * (3 + (self.channels == 4))

    @property
    def decode_bytes(self) -> int:
        """Bytes :func:`data_prep.images.load_image` holds at most while it decodes the image: the whole file
        beside OpenCV's decoded array and the NumPy copy of it the Python binding returns (WebP: one more),
        then for 16-bit samples two uint32 working copies in the rounding to 8 bits, and the BGR copy made of
        a grey or BGRA image (and the alpha's): the peak measured in every form, to 5% (tests/test_deblur_memory.py)."""
        samples = self.height * self.width * self.channels
        decoded = samples * self.sample_bytes * self.decoded_copies
        rounded = samples * (self.sample_bytes + 8) if self.sample_bytes > 1 else 0
        formed = samples + (0 if self.channels == 3 else self.held)
        return self.file_bytes + max(decoded, rounded, formed)


def read_header(path: Path) -> ImageHeader | None:
    """The size and samples of an image file from its header alone (PIL opens files lazily); None where
    PIL cannot tell, and the decoding says what is wrong."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # no DecompressionBombError: huge images are what this is asked for
    try:
        with Image.open(path) as image:
            (width, height), mode, kind, info = image.size, image.mode, image.format, image.info
            args = image.tile[0].args if image.tile else ()
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, AttributeError):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    args = args if isinstance(args, tuple) else (args,)
    rawmode = str(args[0]) if args else ""
    maxval = args[1] if kind == "PPM" and len(args) > 1 and isinstance(args[1], int) else 255  # PPM/PGM
    wide = ";16" in rawmode or mode.startswith("I;16") or maxval > 255
    if mode in ("1", "L", "I", "F") or mode.startswith("I;"):
        channels = 1
    elif mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in info):
        channels = 4
    else:
        channels = 3
    return ImageHeader(height, width, channels, 2 if wide else 1, path.stat().st_size, 3 if kind == "WEBP" else 2)
