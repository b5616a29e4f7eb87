"""The reproduction report: results.json and curves drawn into report.md, with a verdict per claim of the paper."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from data_prep.atomic import write_text_atomic
from mrfnet.reproduce.claims import (
    ABLATION_GROUPS,
    HEADLINE,
    VARIANT_ORDER,
    ablation_run,
    claims,
    read_curve,
    seed_stats,
    val_points,
)
from mrfnet.reproduce.figures import plot_losses, plot_val
from mrfnet.reproduce.paper import PAPER_TABLE_III, PAPER_TABLE_V
from mrfnet.reproduce.report_runs import blur_length_section, convergence_section, speed_quality_section
from mrfnet.runtime.errors import MissingInput
from mrfnet.runtime.markdown import markdown_table, megabytes

log = logging.getLogger(__name__)


RESULTS = "results.json"


REPORT = "report.md"


CURVES = "curves"


def _paper_scores(name: str) -> str:
    if name not in PAPER_TABLE_V:
        return "-"
    psnr, ssim = PAPER_TABLE_V[name]
    return f"{psnr:.2f} / {ssim:.3f}"


def _intro(results: dict[str, Any]) -> list[str]:
    settings, data = results["settings"], results["data"]
    photos = results.get("photographs", {})
    splits = "; ".join(f"{split}: {', '.join(names)}" for split, names in photos.items())
    return [f"# MRFNet reproduction report: {results['name']}", "",
            f"Made by `{results['command']}` on {results['date']}, {results['machine']}; "
            f"{_wall_time(results['seconds'])}. Convolutions ran on "
            f"{results.get('engine', 'Caffe (engine not recorded)')} in {settings.get('precision', 'fp32')}.", "",
            f"**Small-budget CPU results.** The headline MRFNet trained {settings['headline_iterations']} "
            f"iterations (batch {settings['batch_size']}, {settings['crop_size']}x{settings['crop_size']} crops, "
            f"Adam, base lr {settings['base_lr']:g} halved {settings['halvings']} times, scale refinement loss, "
            f"schedule {settings['loss_schedule']}). Each ablation run trained {settings['ablation_iterations']} "
            f"iterations ({settings['ablation_crop_size']}x{settings['ablation_crop_size']} crops, otherwise the "
            f"same) once per seed ({', '.join(map(str, settings['seeds']))}): the four variants with a single "
            "full-resolution L2, and MRFNet with the scale loss. Data: the embedded set, "
            f"{data['train']} training patches of real photographs, each with its own synthetic blur (the "
            f"authors' recipe, motion blur up to {settings['max_motion']} pixels); held out: {data['val']} val "
            f"patches and {data['test']} whole test images ({settings['test_copies']} blur draws per "
            f"photograph). Photographs by split: {splits}.{_headline_data(results)} The paper trains 50-70 epochs "
            "on GOPRO/VisDrone with four GPUs: absolute numbers here are not comparable to its tables.", ""]


def _wall_time(seconds: dict[str, float]) -> str:
    """The job's wall time; where runs were trained by earlier calls of the job (it resumes run by run), also the
    whole profile's, their training counted from their curves."""
    work = seconds.get("work", seconds["total"])
    if work - seconds["total"] < 60:
        return f"{seconds['total']:.0f} s in all"
    return (f"{work:.0f} s of work in all ({work / 3600:.1f} h; this call {seconds['total']:.0f} s, the runs "
            "trained by earlier calls counted from their curves)")


def _headline_data(results: dict[str, Any]) -> str:
    """The headline's own training data, where a profile gives it a longer blur than the ablation's."""
    motion, data = results["settings"].get("headline_max_motion"), results.get("headline_data")
    if not motion or motion == results["settings"]["max_motion"] or not data:
        return ""
    settings = results["settings"]
    copies = settings.get("headline_copies") or settings["copies"]
    draws = f", {copies} blur draws of each patch" if copies > 1 else ""
    augmented = ", augmented (flips, rotations, colour)" if settings.get("headline_augment") else ""
    return (f" The headline trained on its own set of the same photographs with motion blur up to {motion} px "
            f"({data['train']} training patches{draws}{augmented}; its val and test scores are on that set's "
            f"{data['val']} val patches and {data['test']} test images).")


def _score_row(label: str, count: int | str, blurry: dict[str, float], model: dict[str, float]) -> list[str]:
    return [label, str(count), f"{blurry['psnr']:.2f} / {blurry['ssim']:.4f}",
            f"{model['psnr']:.2f} / {model['ssim']:.4f}",
            f"{model['psnr'] - blurry['psnr']:+.2f} / {model['ssim'] - blurry['ssim']:+.4f}"]


def _headline_section(results: dict[str, Any]) -> list[str]:
    """The headline MRFNet on every held-out set: val patches, test photographs, and the real-blur clip."""
    blurry, data = results["val_blurry"], results.get("headline_data", results["data"])
    motion = results["settings"].get("headline_max_motion") or results["settings"]["max_motion"]
    rows = [_score_row(f"val patches, synthetic blur up to {motion} px", blurry.get("images", data["val"]), blurry,
                       results["runs"][HEADLINE]["val"])]
    test, real = results.get("test"), results.get("test_real")
    if test:
        rows.append(_score_row(f"test photographs, synthetic blur up to {motion} px",
                               data["test"], test["blurry"], test[HEADLINE]))
    if real:
        facts = results["real_blur"]
        rows.append(_score_row(f"real temporal blur, {facts['clip']}", facts["pairs"], real["blurry"],
                               real[HEADLINE]))
    out = ["## Headline: MRFNet on held-out data (Table II analogue)", "",
           markdown_table(["held-out set", "images", "blurry input PSNR / SSIM", "MRFNet PSNR / SSIM",
                           "gain (dB / SSIM)"], rows), "",
           "None of these is trained on. The val scores are those of the run's last validation (the same "
           "code path as `mrfnet score`); the test scores come from `mrfnet score` on whole images. "
           f"Metric: {results.get('metric', 'skimage SSIM, RGB, no border crop')}; outputs rounded to uint8.", ""]
    if real:
        out += [_real_blur_text(results["real_blur"], motion), ""]
    return out


def _real_blur_text(facts: dict[str, Any], max_motion: int) -> str:
    motion, blur = facts["motion_px"], facts["blur_px"]
    return (f"**Real temporal blur** (`mrfnet data-prep --source embedded-video`): {facts['pairs']} pairs from "
            f"{facts['clip']}, a street scene filmed at {facts['fps']} fps, {facts['gopro_fps'] / facts['fps']:.1f}x "
            f"below GOPRO's {facts['gopro_fps']} fps. Each pair averages {facts['average']} consecutive frames "
            f"({facts['span_ms']} ms of the clip; GOPRO's 7-13 frames span 25-50 ms) in linear light (gamma "
            f"{facts['gamma']:g}), with {facts['interpolate']} frames synthesised between neighbours by DIS optical "
            f"flow ({facts['virtual_fps']} virtual frames a second), the middle frame as the sharp image; no pair "
            f"spans one of the clip's shot cuts. Measured motion between neighbouring frames: mean "
            f"{motion['mean']:.1f} px (median {motion['median']:.1f}, 90th percentile {motion['p90']:.1f}), so "
            f"blur lengths of mean {blur['mean']:.1f} px (median {blur['median']:.1f}, 90th percentile "
            f"{blur['p90']:.1f}) against the synthetic training blur's motion of at most {max_motion} px. "
            "The exposure is two to three times GOPRO's longest, and where the flow fails (what a moving "
            "cyclist uncovers) the averaged frames leave ghosts rather than a smear: this is harder than "
            f"GOPRO, and unlike anything the headline trained on.{_by_blur_text(facts.get('by_blur', []))}")


def _by_blur_text(bands: list[dict[str, Any]]) -> str:
    """The real-blur gain by measured blur length, as a sentence (none where results.json predates it)."""
    if not bands:
        return ""
    parts = [f"{band['from_px']:g}-{band['to_px']:g} px {band['gain_db']:+.2f} dB ({band['pairs']} pairs)"
             if band["to_px"] is not None else
             f"{band['from_px']:g} px and over {band['gain_db']:+.2f} dB ({band['pairs']} pairs)" for band in bands]
    return (" MRFNet's PSNR gain by each pair's measured blur length: " + ", ".join(parts) + ". Where a window is "
            "nearly still, the net, which never saw an input without blur, sharpens what is already sharp "
            "(edges and the clip's compression) and loses most.")


def _score_sections(results: dict[str, Any]) -> list[str]:
    out = []
    runs, blurry = results.get("runs", {}), results.get("val_blurry")
    if HEADLINE in runs and blurry:
        out += _headline_section(results)
    rows = []
    for group, label in ABLATION_GROUPS.items():
        for variant in VARIANT_ORDER:
            psnr, ssim = seed_stats(results, variant, group), seed_stats(results, variant, group, "ssim")
            if psnr is None:
                continue
            rows.append([variant, label, " / ".join(f"{v:.2f}" for v in psnr.values), psnr.text(),
                         ssim.text(4), _paper_scores(variant) if group == "l2" else "-"])
    blurry = results.get("ablation_val_blurry", blurry)  # the headline's val, where it has no data of its own
    if rows and blurry:
        out += ["## Table V analogue: the ablation on val, over seeds", "",
                markdown_table(["variant", "loss", "val PSNR per seed", "mean ± half-spread", "val SSIM",
                                "paper, VisDrone"], rows), "",
                f"Blurry input on val: {blurry['psnr']:.2f} dB / {blurry['ssim']:.4f}. A difference between two "
                "settings counts only when it is larger than the larger of their seed spreads (max - min); "
                "the claims above say 'within noise' otherwise.", ""]
    return out


def _sections(results: dict[str, Any], curves: dict[str, dict[str, list[float]]], report_dir: Path) -> list[str]:
    out = _intro(results)
    found = claims(results, curves)
    out += ["## The paper's claims", "", markdown_table(["claim", "paper", "measured here", "verdict"],
                                                 [[c.text, c.paper, c.measured, c.verdict] for c in found]), ""]
    table1 = results.get("table1", {})
    if table1:
        sizes = list(next(iter(table1.values()))["macs"])
        rows = [[v, f"{t['params'] / 1e6:.2f}M", *[f"{t['macs'][s] / 1e9:.2f}G" for s in sizes]]
                for v, t in table1.items()]
        out += ["## Table I analogue: size and cost of each variant", "",
                markdown_table(["variant", "parameters", *[f"multiply-adds @{s}" for s in sizes]], rows), "",
                "Counted by Caffe's shape inference on the generated deploy nets (`mrfnet netgen --report`).", ""]
    out += _score_sections(results) + blur_length_section(results) + convergence_section(results, curves)
    validated = [run for run in curves if val_points(curves[run])[0]]
    if validated:
        plot_val(curves, validated, report_dir / "val_curves.png")
        out += ["## Validation while training", "", "![val curves](val_curves.png)", "",
                "Every run's val PSNR gain over the blurry input (`mrfnet train --val-every`), at each validation.",
                ""]
    first_seed = results["settings"]["seeds"][0]
    ablation = [ablation_run(v, "l2", first_seed) for v in VARIANT_ORDER]
    if all(run in curves for run in ablation):
        plot_losses(curves, ablation, report_dir / "loss_curves.png",
                     f"Training loss at full resolution, single L2, seed {first_seed} (Fig. 5 analogue)")
        out += ["## Fig. 5 analogue: training loss", "", "![training loss](loss_curves.png)", ""]
        seeds = results["settings"]["seeds"]
        pair = [ablation_run("mrfnet", group, seed) for group in ABLATION_GROUPS for seed in seeds]
        if all(run in curves for run in pair):
            plot_losses(curves, pair, report_dir / "scale_vs_single.png",
                         "MRFNet: scale refinement loss vs a single full-resolution L2")
            out += ["MRFNet on the ablation budget, trained with the scale refinement loss and with a single "
                    "full-resolution L2 (`--loss-schedule full-only`), every seed.", "",
                    "![scale vs single](scale_vs_single.png)", ""]
    timing = results.get("timing", {})
    if timing:
        sizes = list(next(iter(timing.values())))
        rows = [[v, *[f"{t[s]:.3f}" for s in sizes]] for v, t in timing.items()]
        out += ["## Table IV analogue: inference time (s per image, CPU)", "",
                markdown_table(["variant", *sizes], rows), "", results.get("timing_note", ""), ""]
        out += speed_quality_section(results, curves, report_dir)
    memory = results.get("memory", {})
    if memory:
        batches = list(next(iter(memory.values())))
        rss = results.get("memory_rss", {})
        rows = [[v, *[f"{m[b]:.0f}" for b in batches], *[megabytes(rss.get(v, {}).get(b)) for b in batches]]
                for v, m in memory.items()]
        rows.append(["MRFNet in the paper (GPU)", *[megabytes(PAPER_TABLE_III.get(int(b))) for b in batches],
                     *["" for _ in batches]])
        out += ["## Table III analogue: training memory per GPU (MB)", "",
                markdown_table(["variant", *[f"batch {b} counted" for b in batches],
                                *[f"batch {b} peak RSS" for b in batches]], rows), "", results.get("memory_note", ""),
                "The paper's batches of 8 (GOPRO) and 16 (VisDrone) are over four GPUs: 2 and 4 per GPU.", ""]
    montages = results.get("montages", [])
    if montages:
        out += ["## Montages: blurred | deblurred (headline MRFNet) | sharp", ""]
        for montage in montages:
            held_out = "real temporal blur" if Path(montage).stem.endswith("_real") else "test photographs"
            out += [f"{held_out.capitalize()}:", "", f"![{Path(montage).stem}]({montage})", ""]
    return out


def load(report_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]]]:
    """results.json and the curves of a report folder."""
    results_path = report_dir / RESULTS
    if not results_path.is_file():
        raise MissingInput(f"{report_dir} holds no {RESULTS}: run `mrfnet reproduce` first")
    curves = {path.stem: read_curve(path) for path in sorted((report_dir / CURVES).glob("*.csv"))}
    return json.loads(results_path.read_text()), curves


def write_report(report_dir: str | Path) -> Path:
    """(Re)write ``report.md`` and its figures from ``results.json`` and ``curves/*.csv`` in ``report_dir``."""
    report_dir = Path(report_dir)
    results, curves = load(report_dir)
    path = report_dir / REPORT
    write_text_atomic(path, "\n".join(_sections(results, curves, report_dir)))
    log.info("wrote %s", path)
    return path


def summary_lines(report_dir: str | Path) -> list[str]:
    """The claims as one line each, for the console and the README."""
    results, curves = load(Path(report_dir))
    return [f"{c.verdict}: {c.text}: {c.measured}" for c in claims(results, curves)]
