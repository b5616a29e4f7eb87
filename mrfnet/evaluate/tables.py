"""Comparison tables of scored models (Table V style), refusing to mix metric settings."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrfnet.evaluate.score_files import load_summary
from mrfnet.runtime.errors import InvalidValue
from mrfnet.runtime.markdown import markdown_table

PICKS = ("last", "best")


BLURRY = "blurry input"


@dataclass
class Entry:
    """One score output: its label and the snapshot picked from it."""

    label: str
    summary: dict[str, Any]
    result: dict[str, Any]

    @property
    def test_name(self) -> str:
        return self.summary["test_set"]["name"]


def load_entry(spec: str, pick: str = "last") -> Entry:
    """``PATH`` or ``LABEL=PATH`` of a score output."""
    if pick not in PICKS:
        raise InvalidValue(f"unknown pick {pick!r}; choose one of {', '.join(PICKS)}")
    label, _, path = spec.rpartition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
    summary = load_summary(path)
    results = summary["results"]
    if not results:
        raise InvalidValue(f"{path} holds no scored snapshot")
    result = results[-1] if pick == "last" else max(results, key=lambda r: r["psnr"])
    return Entry(label or summary["label"], summary, result)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    notes: list[str]

    def markdown(self) -> str:
        return "\n".join([markdown_table(self.header, self.rows), ""] + self.notes) + "\n"

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return buffer.getvalue()


def _check_comparable(entries: list[Entry]) -> None:
    metrics = {tuple(sorted(e.summary["metrics"].items())) for e in entries}
    if len(metrics) > 1:
        listed = "; ".join(f"{e.label}: {e.summary['metrics']}" for e in entries)
        raise InvalidValue(f"the scores used different metric options and cannot share a table ({listed})")
    by_test: dict[str, Entry] = {}
    for entry in entries:
        first = by_test.setdefault(entry.test_name, entry)
        if first.summary["test_set"]["fingerprint"] != entry.summary["test_set"]["fingerprint"]:
            raise InvalidValue(f"{first.label} and {entry.label} were scored on different images of the test set "
                             f"{entry.test_name!r} ({first.summary['test_set']['images']} vs "
                             f"{entry.summary['test_set']['images']} images from {first.summary['test_set']['source']} "
                             f"and {entry.summary['test_set']['source']}); give one a --test-name of its own")
    seen = set()
    for entry in entries:
        if (entry.label, entry.test_name) in seen:
            raise InvalidValue(f"{entry.label!r} appears twice for test set {entry.test_name!r}: "
                             "label one with LABEL=PATH")
        seen.add((entry.label, entry.test_name))


def build_table(entries: list[Entry]) -> Table:
    """Rows: the blurry input, then one per label; columns: PSNR and SSIM per test set."""
    if not entries:
        raise InvalidValue("a table needs at least one score output")
    _check_comparable(entries)
    tests = list(dict.fromkeys(e.test_name for e in entries))
    images = {e.test_name: e.summary["test_set"]["images"] for e in entries}
    header = ["model", "variant", "iteration", "params (M)"]
    for test in tests:
        header += [f"{test} ({images[test]}) PSNR", f"{test} SSIM"]
    baseline = {e.test_name: e.summary["baseline"] for e in entries}
    rows = [[BLURRY, "", "", ""] + [value for t in tests for value in (f"{baseline[t]['psnr']:.2f}",
                                                                        f"{baseline[t]['ssim']:.4f}")]]
    for label in dict.fromkeys(e.label for e in entries):
        mine = {e.test_name: e for e in entries if e.label == label}
        first = next(iter(mine.values()))
        iterations = sorted({str(e.result["iteration"]) for e in mine.values() if e.result["iteration"] is not None})
        row = [label, first.summary.get("variant") or "", "/".join(iterations),
               f"{first.result['parameters'] / 1e6:.2f}"]
        for test in tests:
            entry = mine.get(test)
            row += ([f"{entry.result['psnr']:.2f}", f"{entry.result['ssim']:.4f}"] if entry else ["-", "-"])
        rows.append(row)
    metrics = entries[0].summary["metrics"]
    notes = [f"PSNR in dB on uint8 outputs; SSIM {metrics['ssim']}, "
             f"{'Y channel (BT.601)' if metrics['y_channel'] else 'RGB'}, border crop {metrics['crop_border']}, "
             f"data range {metrics['data_range']:g}."]
    return Table(header, rows, notes)


def make_table(specs: list[str], *, pick: str = "last") -> Table:
    """The table of score outputs given as ``PATH`` or ``LABEL=PATH``."""
    return build_table([load_entry(spec, pick) for spec in specs])
