"""Image sizes as the commands write them (WIDTHxHEIGHT) and read them back."""

from __future__ import annotations

import re

from netgen.errors import NetgenError


def size_label(height: int, width: int) -> str:
    """"WIDTHxHEIGHT", as image sizes are usually written (1280x720) and as --sizes takes them."""
    return f"{width}x{height}"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """"256x256,1280x720" (width x height, as images are usually named) -> [(256, 256), (720, 1280)]."""
    sizes = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)x(\d+)\s*", part)
        if not match:
            raise NetgenError(f"--sizes wants WIDTHxHEIGHT[,WIDTHxHEIGHT...], got {text!r}")
        sizes.append((int(match.group(2)), int(match.group(1))))
    return sizes
