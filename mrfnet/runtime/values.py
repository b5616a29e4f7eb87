"""Parsers of option values, for the command line (argparse types) and for --config files and KEY=VALUE alike:
a value that makes no sense is refused before any work starts.

0 is never silently "the default": an option where 0 means something says so in its help and
uses :func:`non_negative_int`; every other count, size and rate must be positive.
"""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {expected}, not {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, not {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0 (for options whose help says what 0 means)."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {value:g}")
    return value


def fraction(text: str) -> float:
    """A finite number from 0 to 1."""
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, not {value:g}")
    return value


def gpu_list(text: str) -> list[int]:
    """GPU ids, comma-separated ("0,1,2,3"; empty: none)."""
    try:
        return [int(g) for g in text.split(",") if g != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GPU ids like 0,1,2,3, not {text!r}") from None
