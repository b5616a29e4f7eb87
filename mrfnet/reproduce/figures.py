"""The report's figures, drawn with matplotlib's Agg backend in one style: training losses, val curves, and
the speed of each variant against its quality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_prep.atomic import atomic_output
from mrfnet.reproduce.claims import HEADLINE, smooth
from mrfnet.reproduce.convergence import val_points

PLOT_STYLE = {"figure.figsize": (7.0, 4.2), "figure.dpi": 110, "font.size": 9, "axes.grid": True,
              "grid.alpha": 0.3, "lines.linewidth": 1.4, "savefig.bbox": "tight"}


COLOURS = {"refinenet": "#1f77b4", "lwrefinenet": "#ff7f0e", "rcrefinenet": "#2ca02c", "mrfnet": "#d62728",
           "mrfnet-scale": "#9467bd"}


SEED_STYLES = ("-", "--", ":", "-.")


def _figure():
    import matplotlib  # here, not at the top: heavy, and only the commands that draw need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, figure: Any, path: Path) -> None:
    """Write ``figure`` whole or not at all (data_prep.atomic) and free it."""
    with atomic_output(path) as partial:
        figure.savefig(partial)
    plt.close(figure)


def _colour(run: str) -> str | None:
    variant, _, rest = run.partition("-")
    return COLOURS.get(f"{variant}-scale" if rest.startswith("scale") else variant)


def _seed_style(run: str) -> str:
    seed = run.rsplit("-s", 1)[-1]
    return SEED_STYLES[int(seed) % len(SEED_STYLES)] if seed.isdigit() else "-"


def plot_losses(curves: dict[str, dict[str, list[float]]], runs: list[str], path: Path, title: str) -> None:
    plt = _figure()
    with plt.rc_context(PLOT_STYLE):
        figure, axes = plt.subplots()
        for run in runs:
            curve = curves[run]
            window = max(1, len(curve["loss_r4"]) // 10)
            axes.plot(curve["iteration"], smooth(curve["loss_r4"], window), label=run, color=_colour(run),
                      linestyle=_seed_style(run))
        axes.set_xlabel("iteration")
        axes.set_ylabel("full-resolution loss (moving average)")
        axes.set_yscale("log")
        axes.set_title(title)
        axes.legend(fontsize=7)
        _save(plt, figure, path)


def plot_val(curves: dict[str, dict[str, list[float]]], runs: list[str], path: Path) -> None:
    """Each run's val PSNR gain over the blurry input against iteration: the headline beside the ablations."""
    plt = _figure()
    with plt.rc_context({**PLOT_STYLE, "figure.figsize": (11.0, 4.2)}):
        figure, (left, right) = plt.subplots(1, 2)
        for run in runs:
            iterations, gains = val_points(curves[run], "val_gain_db")
            axes = left if run == HEADLINE else right
            axes.plot(iterations, gains, marker="o", markersize=3, label=run, color=_colour(run),
                      linestyle=_seed_style(run))
        for axes, title in ((left, "headline MRFNet (scale refinement loss)"), (right, "ablation runs")):
            axes.axhline(0.0, color="black", linewidth=0.8)
            axes.set_xlabel("iteration")
            axes.set_ylabel("val PSNR gain over the blurry input (dB)")
            axes.set_title(title)
            axes.legend(fontsize=7)
        _save(plt, figure, path)




def plot_speed_quality(points: dict[str, list[tuple[float, float]]], inference: dict[str, float], size: str,
                       path: Path) -> None:
    """Each ablation run's final val gain against its training time (left, one point per seed) and each
    variant's mean gain against its inference time per ``size`` image (right): the paper's claim is a balance
    of the two. ``points``: run group name (e.g. ``mrfnet`` or ``mrfnet-scale``) -> [(seconds, gain)]."""
    plt = _figure()
    with plt.rc_context({**PLOT_STYLE, "figure.figsize": (11.0, 4.2)}):
        figure, (left, right) = plt.subplots(1, 2)
        for name, values in points.items():
            seconds, gains = zip(*values, strict=True)
            left.scatter(seconds, gains, label=name, color=_colour(name), s=18)
            if name in inference:
                right.scatter([inference[name]], [sum(gains) / len(gains)], color=_colour(name), s=30)
                right.annotate(name, (inference[name], sum(gains) / len(gains)), fontsize=7,
                               xytext=(4, 4), textcoords="offset points")
        left.set_xlabel("training time, validation included (s)")
        right.set_xlabel(f"inference time per {size} image (s)")
        for axes in (left, right):
            axes.set_ylabel("final val PSNR gain (dB)")
        left.set_title("quality against training time (each seed)")
        right.set_title("quality against inference time (mean over seeds)")
        left.legend(fontsize=7)
        _save(plt, figure, path)
