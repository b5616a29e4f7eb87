"""The report's sections on the runs themselves (issue 27): whether each curve flattened, what each variant's
quality cost in training and inference time, and the headline per blur length beside the linear filter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrfnet.reproduce.claims import ABLATION_GROUPS, HEADLINE, VARIANT_ORDER, ablation_run
from mrfnet.reproduce.convergence import gain_points, is_flat, iterations_to_flat, last_quarter_rise, training_seconds
from mrfnet.reproduce.figures import plot_speed_quality
from mrfnet.runtime.markdown import markdown_table


def convergence_section(results: dict[str, Any], curves: dict[str, dict[str, list[float]]]) -> list[str]:
    """Every run: its final val gain, how much it still rose over its last quarter, flat or not, and (where
    not) the run length at which it would flatten (mrfnet.reproduce.convergence)."""
    flat_db = results["settings"].get("flat_db", 0.05)
    rows = []
    for name, run in results.get("runs", {}).items():
        curve = curves.get(name)
        if curve is None or not gain_points(curve)[0]:
            continue
        rise, seconds = last_quarter_rise(curve), training_seconds(curve)
        flat = is_flat(curve, flat_db)
        needed = None if flat else iterations_to_flat(curve, flat_db)
        rows.append([name, str(run["iterations"]), f"{gain_points(curve)[1][-1]:+.2f}",
                     "-" if rise is None else f"{rise:+.3f}", "yes" if flat else "no",
                     "-" if needed is None else f"~{needed:,}", "-" if seconds is None else f"{seconds:.0f}"])
    if not rows:
        return []
    return ["## Convergence: has each curve flattened?", "",
            markdown_table(["run", "iterations", "final val gain (dB)", "rise over its last quarter",
                            f"flat (< {flat_db:g} dB)", "iterations to flatten (extrapolated)", "training s"], rows),
            "", "A claim rests on curves that have flattened, or it is 'undecided at this budget'. Where a curve "
            "still rose, the run length at which it would flatten is extrapolated from the later half of its "
            "validations with gain = a - b / iteration (docs/architecture.md, \"Convergence\"): an estimate, "
            "since a longer run would also stretch its learning-rate schedule.", ""]


def _run_groups(results: dict[str, Any]) -> dict[str, list[str]]:
    """The ablation's settings as the figure names them (``mrfnet`` with L2, ``mrfnet-scale``) -> their runs."""
    seeds = results["settings"]["seeds"]
    groups = {variant: [ablation_run(variant, "l2", seed) for seed in seeds] for variant in VARIANT_ORDER}
    groups["mrfnet-scale"] = [ablation_run("mrfnet", "scale", seed) for seed in seeds]
    return groups


def speed_quality_section(results: dict[str, Any], curves: dict[str, dict[str, list[float]]],
                          report_dir: Path) -> list[str]:
    """The figure of quality against training and inference time, from the ablation's own runs and the timing
    stage, at the smallest timed size (where the per-image times are the paper's Table IV analogue)."""
    timing = results.get("timing", {})
    points: dict[str, list[tuple[float, float]]] = {}
    for name, runs in _run_groups(results).items():
        values = [(training_seconds(curves[run]), results["runs"][run]["val"]["gain_db"])
                  for run in runs if run in curves and run in results.get("runs", {})]
        values = [(seconds, gain) for seconds, gain in values if seconds is not None]
        if values:
            points[name] = values
    if not points or not timing:
        return []
    size = next(iter(next(iter(timing.values()))))
    inference = {variant: times[size] for variant, times in timing.items()}
    inference["mrfnet-scale"] = inference.get("mrfnet", 0.0)  # the same net; only its training loss differs
    plot_speed_quality(points, inference, size, report_dir / "speed_quality.png")
    return ["## Speed against quality", "", "![speed against quality](speed_quality.png)", "",
            f"Left: each ablation run's final val gain against its wall time of training on this machine "
            f"({', '.join(ABLATION_GROUPS.values())}); right: each setting's mean gain against its inference "
            f"time per {size} image (the timing stage). The paper claims MRFNet balances the two.", ""]


def blur_length_section(results: dict[str, Any]) -> list[str]:
    """The headline per exact blur length, beside the least-squares linear filter fitted on that length."""
    lengths = results.get("blur_lengths") or {}
    if not lengths:
        return []
    rows = []
    for length, score in lengths.items():
        blurry, model, linear = score["blurry"], score[HEADLINE], score["linear"]
        rows.append([f"{length} px", str(score["images"]), f"{blurry['psnr']:.2f} / {blurry['ssim']:.4f}",
                     f"{model['psnr']:.2f} / {model['ssim']:.4f}", f"{model['psnr'] - blurry['psnr']:+.2f}",
                     f"{linear['psnr']:.2f} / {linear['ssim']:.4f}", f"{linear['psnr'] - blurry['psnr']:+.2f}"])
    trained = results["settings"].get("headline_max_motion") or results["settings"]["max_motion"]
    return ["## Headline per blur length (held-out photographs)", "",
            markdown_table(["motion blur", "images", "blurry PSNR / SSIM", "MRFNet PSNR / SSIM", "MRFNet gain (dB)",
                            "linear filter PSNR / SSIM", "linear filter gain (dB)"], rows), "",
            f"The test photographs blurred with the authors' recipe at exactly each motion length (any of its 24 "
            f"angles, its Gaussian blur and noise; `mrfnet data-prep --min-motion L --max-motion L`). The headline "
            f"trained on motion blur up to {trained} px. The linear filter is the least-squares 9x9 filter fitted on "
            "the training photographs blurred at that same length (mrfnet.evaluate.linear_filter): the best a "
            "learned sharpening without non-linearity does on those blurs, a ceiling the net must pass to have "
            "learned more.", ""]
