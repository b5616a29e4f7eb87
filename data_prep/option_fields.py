"""Options described once: :func:`option` makes a dataclass field that carries an option's default, help,
parser and choices, and the parsers below check its values, for the command line (argparse types) and for
--config files and KEY=VALUE alike, so a value that makes no sense is refused before any work starts.

They live here, in data_prep, because data_prep imports no other project package (docs/architecture.md,
"Layout") while mrfnet may import data_prep: ``BuildOptions`` and mrfnet's options (``TrainOptions`` and the
other commands') are described the same way, and mrfnet.runtime.options turns such fields into flags.

0 is never silently "the default": an option where 0 means something says so in its help and
uses :func:`non_negative_int`; every other count, size and rate must be positive.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Collection
from typing import Any


def option(default: Any = dataclasses.MISSING, help: str | Callable[[], str] = "", *,  # noqa: A002
           parse: Callable[[str], Any] | None = None, choices: Collection[str] | None = None,
           metavar: str | None = None, group: str | None = None, cli: bool = True) -> Any:
    """A dataclass field described for the command line.

    ``help`` may place the default itself with ``%(default)s``, or word it (a help that says "default" gets
    none appended). ``help`` as a function and ``choices`` are read when a parser is built, not here, so
    that text and choices drawn from a registry (data_prep.sources.SOURCES, netgen's VARIANTS) offer its later
    entries too. ``group``: the title of the flag's argument group in --help; ``cli=False``: stored, never a
    flag or override.
    """
    metadata = {"help": help, "parse": parse, "choices": choices, "metavar": metavar, "group": group, "cli": cli}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


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
