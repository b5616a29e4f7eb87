"""What several commands share beside their options dataclasses: the --variants list and the writability check
of an output folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mrfnet.runtime.errors import InvalidValue
from netgen.variants import VARIANTS


def add_variants_argument(parser: argparse.ArgumentParser) -> None:
    """--variants: some of netgen's variants, in the order given (default: all)."""
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), metavar="VARIANT",
                        help=f"which variants (default: all of {', '.join(VARIANTS)})")


def check_writable(option: str, folder: Path) -> None:
    """Refuse ``folder`` (to be created if missing) when it cannot be written, before any work."""
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not os.access(existing, os.W_OK):
        raise InvalidValue(f"{option} {folder}: {existing} is not writable")
