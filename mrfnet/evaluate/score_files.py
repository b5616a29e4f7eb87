"""What `mrfnet score` writes beside its results, and reads back: images.csv, a run's score.csv and score.png,
and summary.json (which `mrfnet table` reads). Every file is written whole or not at all (data_prep.atomic)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from data_prep.atomic import atomic_output, write_text_atomic
from mrfnet.runtime.errors import InvalidValue, MissingInput

# ``report`` below is a mrfnet.evaluate.scoring.ScoreReport: typed Any, since scoring imports this module.
SUMMARY = "summary.json"


@dataclass
class ImageScore:
    name: str
    height: int
    width: int
    psnr: float
    ssim: float
    blur_psnr: float
    blur_ssim: float
    seconds: float


def write_image_csv(rows: Sequence[ImageScore], path: Path) -> None:
    """images.csv: one row per image, written whole or not at all (data_prep.atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[f.name for f in fields(ImageScore)])
    writer.writeheader()
    for row in rows:
        writer.writerow({key: (f"{value:.6f}" if isinstance(value, float) else value)
                         for key, value in asdict(row).items()})
    write_text_atomic(path, text.getvalue())


def write_iteration_csv(report: Any, path: Path) -> None:
    """score.csv of a run: one row per snapshot, with the blurry baseline repeated for plotting (written whole)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["iteration", "psnr", "ssim", "blur_psnr", "blur_ssim", "images", "caffemodel"])
    for result in report.results:
        writer.writerow([result.iteration, f"{result.psnr:.6f}", f"{result.ssim:.6f}",
                         f"{report.baseline['psnr']:.6f}", f"{report.baseline['ssim']:.6f}", len(result.images),
                         result.caffemodel])
    write_text_atomic(path, text.getvalue())


def plot_iterations(report: Any, path: Path) -> None:
    """PSNR and SSIM against iteration, the blurry input's as a dashed line (Agg, fixed style)."""
    import matplotlib  # here, not at the top: heavy, and only the commands that draw need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = [r.iteration if r.iteration is not None else i for i, r in enumerate(report.results)]
    with plt.style.context("default"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
        for axis, metric, unit in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
            axis.plot(iterations, [getattr(r, metric) for r in report.results], marker="o", color="tab:blue",
                      linewidth=1.5, label=report.label)
            axis.axhline(report.baseline[metric], color="gray", linestyle="--", linewidth=1.2, label="blurry input")
            axis.set(xlabel="iteration", ylabel=unit, title=f"{unit} on {report.test_set['name']}")
            axis.grid(True, alpha=0.3)
            axis.legend(fontsize=8)
        fig.suptitle(f"{report.label}: SSIM {report.metrics['ssim']}"
                     f"{', Y channel' if report.metrics['y_channel'] else ', RGB'}"
                     f"{', crop ' + str(report.metrics['crop_border']) if report.metrics['crop_border'] else ''}",
                     fontsize=10)
        fig.tight_layout()
        with atomic_output(path) as partial:
            fig.savefig(partial)
        plt.close(fig)


def load_summary(path: str | Path) -> dict[str, Any]:
    """A summary.json written by `mrfnet score` (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY
    if not path.is_file():
        raise MissingInput(f"no {SUMMARY} at {path} (score a model with `mrfnet score` first)")
    data = json.loads(path.read_text())
    if "results" not in data or "test_set" not in data:
        raise InvalidValue(f"{path} is not a summary written by `mrfnet score`")
    return data
