"""The reproduction report: results.json and the runs' training curves -> report.md and its figures.

`mrfnet reproduce` collects every number into ``results.json`` and copies each run's
progress.csv into ``curves/``, so a report folder is self-contained and this module can redraw it
(``mrfnet report DIR``). Each of the paper's claims gets one line: confirmed, not confirmed, or not
measurable here, with the number that decides it.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RESULTS = "results.json"
REPORT = "report.md"
CURVES = "curves"
VARIANT_ORDER = ("refinenet", "lwrefinenet", "rcrefinenet", "mrfnet")
SINGLE_L2_RUN = "mrfnet-single-l2"
SCORED_SPLITS = ("test", "val")  # results.json keys "scores" (test) and "scores_val"; neither is trained on
# The paper's own numbers (Tables IV and V, Sec. III.B), quoted beside ours.
PAPER_TABLE_V = {"refinenet": (28.73991, 0.854758), "lwrefinenet": (29.24461, 0.860164),
                 "rcrefinenet": (29.03971, 0.858601), "mrfnet": (29.40845, 0.862474)}  # VisDrone PSNR, SSIM
PAPER_PARAMS_CUT, PAPER_FLOPS_CUT = 0.50, 0.75
PAPER_LW_TIME_1280 = 0.494  # s per 1280x768 image, GTX 1650 (Table IV, LWRefineNet)
PLOT_STYLE = {"figure.figsize": (7.0, 4.2), "figure.dpi": 110, "font.size": 9, "axes.grid": True,
              "grid.alpha": 0.3, "lines.linewidth": 1.4, "savefig.bbox": "tight"}
COLOURS = {"refinenet": "#1f77b4", "lwrefinenet": "#ff7f0e", "rcrefinenet": "#2ca02c", "mrfnet": "#d62728",
           SINGLE_L2_RUN: "#7f7f7f"}
CONFIRMED, NOT_CONFIRMED, NOT_MEASURABLE = "confirmed", "not confirmed", "not measurable here"


@dataclass(frozen=True)
class Claim:
    text: str
    paper: str
    measured: str
    verdict: str


def read_curve(path: Path) -> dict[str, list[float]]:
    """Columns of a progress.csv as float lists."""
    with path.open() as file:
        rows = list(csv.DictReader(file))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average, so noisy per-iteration losses show their trend."""
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out


def tail_mean(values: list[float], fraction: float = 0.2) -> float:
    """Mean of the last ``fraction`` of a curve: the end-of-training level, less noisy than the last value."""
    count = max(1, round(len(values) * fraction))
    return sum(values[-count:]) / count


def _plot_curves(curves: dict[str, dict[str, list[float]]], runs: list[str], column: str, path: Path,
                 title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(PLOT_STYLE):
        figure, axes = plt.subplots()
        for run in runs:
            curve = curves[run]
            window = max(1, len(curve[column]) // 20)
            axes.plot(curve["iteration"], smooth(curve[column], window), label=run, color=COLOURS.get(run))
        axes.set_xlabel("iteration")
        axes.set_ylabel(f"{column} (moving average)")
        axes.set_yscale("log")
        axes.set_title(title)
        axes.legend()
        figure.savefig(path)
        plt.close(figure)


def _pct(value: float) -> str:
    return f"{value:+.1%}"


def _verdict(holds: bool) -> str:
    return CONFIRMED if holds else NOT_CONFIRMED


def claims(results: dict[str, Any], curves: dict[str, dict[str, list[float]]]) -> list[Claim]:
    """One line per claim of the paper that this run can speak to."""
    table1, timing, memory = (results.get(k, {}) for k in ("table1", "timing", "memory"))
    # The val split's many patches decide the PSNR claims when present; the test split may be one image.
    scores, split = (results["scores_val"], "val") if results.get("scores_val") else (results.get("scores", {}), "test")
    found = []
    if {"refinenet", "lwrefinenet"} <= table1.keys():
        light, heavy = table1["lwrefinenet"], table1["refinenet"]
        params_cut = 1 - light["params"] / heavy["params"]
        found.append(Claim("Lightweight process cuts parameters by more than 50% (Sec. III.B)",
                           f"-{PAPER_PARAMS_CUT:.0%}", f"LWRefineNet vs RefineNet {_pct(-params_cut)}",
                           _verdict(params_cut > PAPER_PARAMS_CUT)))
        size = next(iter(heavy["macs"]))
        flops_cut = 1 - light["macs"][size] / heavy["macs"][size]
        found.append(Claim("Lightweight process cuts FLOPs by more than 75% (Sec. III.B)",
                           f"-{PAPER_FLOPS_CUT:.0%}", f"LWRefineNet vs RefineNet at {size}: {_pct(-flops_cut)}",
                           _verdict(flops_cut > PAPER_FLOPS_CUT)))
    variants = [v for v in VARIANT_ORDER if v in scores]
    if len(variants) == len(VARIANT_ORDER) and "blurry" in scores:
        psnr = {v: scores[v]["psnr"] for v in variants}
        best = max(psnr, key=psnr.get)
        found.append(Claim("MRFNet gives the best PSNR of the four variants (Table V)",
                           "MRFNet 29.41 dB best",
                           f"{split}: best {best} {psnr[best]:.2f} dB (MRFNet {psnr['mrfnet']:.2f})",
                           _verdict(best == "mrfnet")))
        both = psnr["lwrefinenet"] > psnr["refinenet"] and psnr["rcrefinenet"] > psnr["refinenet"]
        found.append(Claim("LWRefineNet and RCRefineNet beat RefineNet (Table V)", "+0.50 / +0.30 dB",
                           f"{split}: {psnr['lwrefinenet'] - psnr['refinenet']:+.2f} / "
                           f"{psnr['rcrefinenet'] - psnr['refinenet']:+.2f} dB", _verdict(both)))
        gain = psnr["mrfnet"] - scores["blurry"]["psnr"]
        found.append(Claim("MRFNet deblurs: its PSNR beats the blurry input", "yes (Table II)",
                           f"{split}: {gain:+.2f} dB over the blurry input", _verdict(gain > 0)))
    if "mrfnet" in curves and SINGLE_L2_RUN in curves:
        scale, single = tail_mean(curves["mrfnet"]["loss_r4"]), tail_mean(curves[SINGLE_L2_RUN]["loss_r4"])
        found.append(Claim("The scale refinement loss converges faster than a single full-resolution L2 (Fig. 5)",
                           "final loss ~4% vs ~6%",
                           f"full-resolution loss at the end {scale:.3g} (scale loss) vs {single:.3g} (single L2)",
                           _verdict(scale < single)))
    if {"refinenet", "lwrefinenet"} <= timing.keys():
        size = "1280x720" if "1280x720" in timing["lwrefinenet"] else next(iter(timing["lwrefinenet"]))
        fastest = min(timing, key=lambda v: timing[v][size])
        found.append(Claim("LWRefineNet infers fastest of the variants (Table IV)", "fastest",
                           f"fastest at {size} on this CPU: {fastest} ({timing[fastest][size]:.3f} s)",
                           _verdict(fastest == "lwrefinenet")))
        found.append(Claim("0.494 s per 1280x768 image on a GTX 1650 (Table IV)", f"{PAPER_LW_TIME_1280} s",
                           f"CPU only here: LWRefineNet {timing['lwrefinenet'][size]:.3f} s at {size}",
                           NOT_MEASURABLE))
    if {"refinenet", "mrfnet"} <= memory.keys():
        batch = max(memory["mrfnet"], key=int)
        light, heavy = memory["mrfnet"][batch], memory["refinenet"][batch]
        found.append(Claim("The lightweight process keeps memory low (Table III)", "5898 MB at batch 16",
                           f"training memory at batch {batch}: MRFNet {light:.0f} MB vs RefineNet {heavy:.0f} MB",
                           _verdict(light < heavy)))
    return found


def _paper_scores(name: str) -> str:
    if name not in PAPER_TABLE_V:
        return "-"
    psnr, ssim = PAPER_TABLE_V[name]
    return f"{psnr:.2f} / {ssim:.3f}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _sections(results: dict[str, Any], curves: dict[str, dict[str, list[float]]], report_dir: Path) -> list[str]:
    settings = results["settings"]
    out = [f"# MRFNet reproduction report: {results['name']}", "",
           f"Made by `{results['command']}` on {results['date']}, {results['machine']}; "
           f"{results['seconds']['total']:.0f} s in all.", "",
           f"**Small-budget CPU results.** Each variant trained {settings['iterations']} iterations "
           f"(batch {settings['batch_size']}, {settings['crop_size']}x{settings['crop_size']} crops, Adam, base lr "
           f"{settings['base_lr']:g}, loss schedule {settings['loss_schedule']}) on the embedded set: "
           f"{results['data']['train']} training patches from real photographs with synthetic blur, "
           f"scored on held-out photographs ({results['data']['test']} whole images, {results['data']['val']} "
           "patches). The paper trains 50-70 epochs on "
           "GOPRO/VisDrone with four GPUs: absolute numbers here are not comparable to its tables; the "
           "comparisons between variants under one budget are what this run can speak to.", ""]
    found = claims(results, curves)
    out += ["## The paper's claims", "", _table(["claim", "paper", "measured here", "verdict"],
                                                 [[c.text, c.paper, c.measured, c.verdict] for c in found]), ""]
    table1 = results.get("table1", {})
    if table1:
        sizes = list(next(iter(table1.values()))["macs"])
        rows = [[v, f"{t['params'] / 1e6:.2f}M", *[f"{t['macs'][s] / 1e9:.2f}G" for s in sizes]]
                for v, t in table1.items()]
        out += ["## Table I analogue: size and cost of each variant", "",
                _table(["variant", "parameters", *[f"multiply-adds @{s}" for s in sizes]], rows), "",
                "Counted by Caffe's shape inference on the generated deploy nets (`mrfnet netgen --report`).", ""]
    scores, scores_val = results.get("scores", {}), results.get("scores_val", {})
    if scores:
        data = results["data"]
        head = ["model", f"test PSNR ({data['test']} images)", "test SSIM"]
        if scores_val:
            head += [f"val PSNR ({data['val']} patches)", "val SSIM"]
        rows = []
        for name, s in scores.items():
            row = [name, f"{s['psnr']:.2f}", f"{s['ssim']:.4f}"]
            if scores_val:
                row += [f"{scores_val[name]['psnr']:.2f}", f"{scores_val[name]['ssim']:.4f}"]
            rows.append([*row, _paper_scores(name)])
        out += ["## Table V analogue: PSNR / SSIM on held-out images", "",
                _table([*head, "paper, VisDrone"], rows), "",
                "Both splits come from photographs no run trained on: test holds whole images, val the patches "
                "of another image (with their own random blur); the claims above use val when it is present. "
                f"Metric: {results.get('metric', 'skimage SSIM, RGB, no border crop')}; outputs rounded to uint8.", ""]
    if curves:
        _plot_curves(curves, [r for r in VARIANT_ORDER if r in curves], "loss_r4", report_dir / "loss_curves.png",
                     "Training loss at full resolution (Fig. 5 analogue)")
        out += ["## Fig. 5 analogue: training loss", "", "![training loss](loss_curves.png)", ""]
        if "mrfnet" in curves and SINGLE_L2_RUN in curves:
            _plot_curves(curves, ["mrfnet", SINGLE_L2_RUN], "loss_r4", report_dir / "scale_vs_single.png",
                         "MRFNet: scale refinement loss vs a single full-resolution L2")
            single = scores.get(SINGLE_L2_RUN)
            extra = f" Test PSNR with the single L2: {single['psnr']:.2f} dB." if single else ""
            out += ["Same variant, same budget, trained with the scale refinement loss (coarse-to-fine schedule) "
                    f"and with a single full-resolution L2 (`--loss-schedule full-only`).{extra}", "",
                    "![scale vs single](scale_vs_single.png)", ""]
    timing = results.get("timing", {})
    if timing:
        sizes = list(next(iter(timing.values())))
        rows = [[v, *[f"{t[s]:.3f}" for s in sizes]] for v, t in timing.items()]
        out += ["## Table IV analogue: inference time (s per image, CPU)", "",
                _table(["variant", *sizes], rows), "", results.get("timing_note", ""), ""]
    memory = results.get("memory", {})
    if memory:
        batches = list(next(iter(memory.values())))
        rows = [[v, *[f"{m[b]:.0f}" for b in batches]] for v, m in memory.items()]
        out += ["## Table III analogue: training memory (MB)", "",
                _table(["variant", *[f"batch {b}" for b in batches]], rows), "", results.get("memory_note", ""), ""]
    montages = results.get("montages", [])
    if montages:
        out += ["## Montages: blurred | deblurred | sharp", ""]
        out += [f"![{Path(m).stem}]({m})" for m in montages] + [""]
    return out


def load(report_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]]]:
    """results.json and the curves of a report folder."""
    results_path = report_dir / RESULTS
    if not results_path.is_file():
        raise FileNotFoundError(f"{report_dir} holds no {RESULTS}: run `mrfnet reproduce` first")
    curves = {path.stem: read_curve(path) for path in sorted((report_dir / CURVES).glob("*.csv"))}
    return json.loads(results_path.read_text()), curves


def write_report(report_dir: str | Path) -> Path:
    """(Re)write ``report.md`` and its figures from ``results.json`` and ``curves/*.csv`` in ``report_dir``."""
    report_dir = Path(report_dir)
    results, curves = load(report_dir)
    path = report_dir / REPORT
    path.write_text("\n".join(_sections(results, curves, report_dir)))
    log.info("wrote %s", path)
    return path


def summary_lines(report_dir: str | Path) -> list[str]:
    """The claims as one line each, for the console and the README."""
    results, curves = load(Path(report_dir))
    return [f"{c.verdict}: {c.text}: {c.measured}" for c in claims(results, curves)]


def run(args: argparse.Namespace) -> int:
    write_report(args.report_dir)
    for line in summary_lines(args.report_dir):
        print(line)
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="redraw a reproduction report from its results.json",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report_dir", type=Path, help="a folder written by `mrfnet reproduce`")
    parser.set_defaults(run=run)
