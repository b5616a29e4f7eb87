"""The error netgen raises for a net that cannot be built as asked (the command line says it in one line)."""

from __future__ import annotations


class NetgenError(ValueError):
    """A variant, size, engine or option netgen cannot build a net for; what to choose instead."""


class NetgenMissing(NetgenError, FileNotFoundError):
    """A tool netgen needs (Graphviz for drawing) is not installed."""
