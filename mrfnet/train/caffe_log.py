"""Caffe's training log parsed into rows, and the loss and PSNR curves drawn from it (as Caffe's parse_log.py)."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections import defaultdict
from pathlib import Path

from data_prep.atomic import atomic_output, write_text_atomic
from mrfnet.runtime.errors import InvalidValue, MissingInput
from mrfnet.runtime.run_files import CAFFE_LOG, PROGRESS
from mrfnet.train.validation import COLUMNS as VAL_COLUMNS

log = logging.getLogger(__name__)


ITERATION = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = ([-+\w.]+)")


TESTING = re.compile(r"Iteration (\d+), Testing net")


OUTPUT = re.compile(r"(Train|Test) net output #\d+: (\S+) = ([-+\w.]+)")


LEARNING_RATE = re.compile(r"Iteration (\d+), lr = ([-+\w.]+)")


def parse_caffe_log(text: str) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Rows of (iteration, lr, loss, each train output) and of (iteration, each test output)."""
    train: dict[int, dict[str, float]] = defaultdict(dict)
    test: dict[int, dict[str, float]] = defaultdict(dict)
    iteration, test_iteration = 0, None
    for line in text.splitlines():
        if match := ITERATION.search(line):
            iteration = int(match.group(1))
            train[iteration]["loss"] = float(match.group(2))
            test_iteration = None
        elif match := TESTING.search(line):
            test_iteration = int(match.group(1))
        elif match := LEARNING_RATE.search(line):
            train[int(match.group(1))]["lr"] = float(match.group(2))
        elif match := OUTPUT.search(line):
            phase, name, value = match.groups()
            if phase == "Test" and test_iteration is not None:
                test[test_iteration][name] = float(value)
            elif phase == "Train":
                train[iteration][name] = float(value)
    as_rows = lambda table: [{"iteration": it, **values} for it, values in sorted(table.items())]  # noqa: E731
    return as_rows(train), as_rows(test)


def write_csv(rows: list[dict[str, float]], path: Path) -> None:
    """Write ``rows`` as a CSV whole or not at all: a full disk keeps the previous file (data_prep.atomic)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def read_validation(progress: Path) -> list[dict[str, float]]:
    """The rows of a run's progress.csv where `mrfnet train --val-every` scored the weights."""
    if not progress.is_file():
        return []
    with progress.open() as file:
        return [{"iteration": float(row["iteration"]), **{k: float(row[k]) for k in VAL_COLUMNS}}
                for row in csv.DictReader(file) if row.get("val_psnr")]


def plot(train: list[dict[str, float]], test: list[dict[str, float]], path: Path, title: str,
         validation: list[dict[str, float]] | None = None) -> None:
    import matplotlib  # here, not at the top: heavy, and only the commands that draw need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.style.context("default"):
        panels = 2 + bool(test) + bool(validation)
        fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), dpi=100)
        outputs = [k for k in dict.fromkeys(k for row in train for k in row) if k not in ("iteration", "lr")]
        for name in outputs:
            points = [(r["iteration"], r[name]) for r in train if name in r]
            axes[0].plot(*zip(*points, strict=True), label=name, linewidth=1.2)
        axes[0].set(xlabel="iteration", ylabel="training loss", yscale="log", title="training outputs")
        axes[0].legend(fontsize=8)
        lr = [(r["iteration"], r["lr"]) for r in train if "lr" in r]
        if lr:
            axes[1].plot(*zip(*lr, strict=True), color="black", linewidth=1.2, drawstyle="steps-post")
        axes[1].set(xlabel="iteration", ylabel="learning rate", title="learning rate")
        if test:
            for name in [k for k in dict.fromkeys(k for row in test for k in row) if k != "iteration"]:
                points = [(r["iteration"], r[name]) for r in test if name in r]
                axes[2].plot(*zip(*points, strict=True), marker="o", label=name, linewidth=1.2)
            axes[2].set(xlabel="iteration", ylabel="val output", yscale="log", title="validation outputs")
            axes[2].legend(fontsize=8)
        if validation:
            axis = axes[-1]
            iterations = [row["iteration"] for row in validation]
            axis.plot(iterations, [row["val_gain_db"] for row in validation], marker="o", color="tab:red",
                      linewidth=1.2)
            axis.axhline(0.0, color="black", linewidth=0.8)
            axis.set(xlabel="iteration", ylabel="val PSNR gain over the blurry input (dB)",
                     title="validation (--val-every)")
        for axis in axes:
            axis.grid(True, alpha=0.3)
        fig.suptitle(title)
        fig.tight_layout()
        with atomic_output(path) as partial:
            fig.savefig(partial)
        plt.close(fig)


def plot_run(run_dir: Path) -> Path:
    """Parse ``run_dir``/caffe.log; write train.csv, test.csv and log.png there; return the PNG."""
    log_path = run_dir / CAFFE_LOG if run_dir.is_dir() else run_dir
    if not log_path.is_file():
        raise MissingInput(f"no Caffe log at {log_path}")
    train, test = parse_caffe_log(log_path.read_text(errors="replace"))
    if not train:
        raise InvalidValue(f"{log_path} holds no 'Iteration N, loss = X' lines (was `display` 0?)")
    out = log_path.parent
    write_csv(train, out / "train.csv")
    if test:
        write_csv(test, out / "test.csv")
    figure = out / "log.png"
    plot(train, test, figure, title=out.name, validation=read_validation(out / PROGRESS))
    log.info("%d train and %d test rows -> %s", len(train), len(test), figure)
    return figure
