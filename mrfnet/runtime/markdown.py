"""Markdown the reports, timings and tables print: one table writer, one way to show a size in MB."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A pipe table: the header, its rule, one line per row (no trailing newline)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def megabytes(value: float | None) -> str:
    """A memory figure in whole MB, or '-' where there is none."""
    return "-" if value is None else f"{value:.0f}"
