"""The reproduction report: results.json and curves drawn into report.md, with a verdict per claim of the paper."""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrfnet.reproduce.paper import PAPER_FLOPS_CUT, PAPER_LW_TIME_1280, PAPER_PARAMS_CUT, PAPER_TABLE_III, PAPER_TABLE_V

log = logging.getLogger(__name__)


RESULTS = "results.json"


REPORT = "report.md"


CURVES = "curves"


VARIANT_ORDER = ("refinenet", "lwrefinenet", "rcrefinenet", "mrfnet")


HEADLINE = "mrfnet"  # the main job's MRFNet: scale refinement loss, most of the budget


ABLATION_GROUPS = {"l2": "single full-resolution L2", "scale": "scale refinement loss"}


PLOT_STYLE = {"figure.figsize": (7.0, 4.2), "figure.dpi": 110, "font.size": 9, "axes.grid": True,
              "grid.alpha": 0.3, "lines.linewidth": 1.4, "savefig.bbox": "tight"}


COLOURS = {"refinenet": "#1f77b4", "lwrefinenet": "#ff7f0e", "rcrefinenet": "#2ca02c", "mrfnet": "#d62728",
           "mrfnet-scale": "#9467bd"}


SEED_STYLES = ("-", "--", ":", "-.")


CONFIRMED, NOT_CONFIRMED, NOT_MEASURABLE = "confirmed", "not confirmed", "not measurable here"


CONTRADICTED, WITHIN_NOISE = "contradicted", "within noise"


PSNR_FLOOR_DB = 0.01  # differences below what the report prints are never a verdict


LOSS_FLOOR = 0.01  # of the mean loss, for the same reason


@dataclass(frozen=True)
class Claim:
    text: str
    paper: str
    measured: str
    verdict: str


def ablation_run(variant: str, group: str, seed: int) -> str:
    """The run name of one ablation run, e.g. ``refinenet-l2-s0`` or ``mrfnet-scale-s1``."""
    return f"{variant}-{group}-s{seed}"


def read_curve(path: Path) -> dict[str, list[float]]:
    """Columns of a progress.csv as float lists (NaN where a row has no value, e.g. no validation there)."""
    with path.open() as file:
        rows = list(csv.DictReader(file))
    return {key: [float(row[key]) if row[key] not in ("", None) else math.nan for row in rows]
            for key in (rows[0] if rows else {})}


def val_points(curve: dict[str, list[float]], column: str = "val_psnr") -> tuple[list[float], list[float]]:
    """(iterations, values) of the rows of a curve where validation ran."""
    pairs = [(i, v) for i, v in zip(curve["iteration"], curve.get(column, []), strict=False) if not math.isnan(v)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


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


@dataclass(frozen=True)
class SeedStats:
    """One ablation setting over its seeds: the mean and the spread (max - min) that is its noise."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def spread(self) -> float:
        return max(self.values) - min(self.values)

    def text(self, digits: int = 2) -> str:
        return f"{self.mean:.{digits}f} ± {self.spread / 2:.{digits}f}"


def seed_stats(results: dict[str, Any], variant: str, group: str, key: str = "psnr") -> SeedStats | None:
    """The val ``key`` of ``variant`` in ablation ``group`` over the job's seeds (None if it did not run)."""
    seeds = results["settings"]["seeds"]
    runs = results.get("runs", {})
    names = [ablation_run(variant, group, seed) for seed in seeds]
    if not names or not all(name in runs for name in names):
        return None
    return SeedStats(tuple(runs[name]["val"][key] for name in names))


def compare(better: SeedStats, worse: SeedStats, *, floor: float, lower_is_better: bool = False
            ) -> tuple[float, float, str]:
    """(difference of the means in the claimed direction, the noise, the verdict).

    The noise is the larger of the two seed spreads, and at least ``floor`` (the resolution the report
    speaks at): a difference no larger than that is within noise.
    """
    difference = better.mean - worse.mean
    if lower_is_better:
        difference = -difference
    noise = max(better.spread, worse.spread, floor)
    if abs(difference) <= noise:
        return difference, noise, WITHIN_NOISE
    return difference, noise, CONFIRMED if difference > 0 else CONTRADICTED


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colour(run: str) -> str | None:
    variant, _, rest = run.partition("-")
    return COLOURS.get(f"{variant}-scale" if rest.startswith("scale") else variant)


def _seed_style(run: str) -> str:
    seed = run.rsplit("-s", 1)[-1]
    return SEED_STYLES[int(seed) % len(SEED_STYLES)] if seed.isdigit() else "-"


def _plot_losses(curves: dict[str, dict[str, list[float]]], runs: list[str], path: Path, title: str) -> None:
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
        figure.savefig(path)
        plt.close(figure)


def _plot_val(curves: dict[str, dict[str, list[float]]], runs: list[str], path: Path) -> None:
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
        figure.savefig(path)
        plt.close(figure)


def _pct(value: float) -> str:
    return f"{value:+.1%}"


def _verdict(holds: bool) -> str:
    return CONFIRMED if holds else NOT_CONFIRMED


def _size_claims(table1: dict[str, Any]) -> list[Claim]:
    if not {"refinenet", "lwrefinenet"} <= table1.keys():
        return []
    light, heavy = table1["lwrefinenet"], table1["refinenet"]
    params_cut = 1 - light["params"] / heavy["params"]
    size = next(iter(heavy["macs"]))
    flops_cut = 1 - light["macs"][size] / heavy["macs"][size]
    return [Claim("Lightweight process cuts parameters by more than 50% (Sec. III.B)", f"-{PAPER_PARAMS_CUT:.0%}",
                  f"LWRefineNet vs RefineNet {_pct(-params_cut)}", _verdict(params_cut > PAPER_PARAMS_CUT)),
            Claim("Lightweight process cuts FLOPs by more than 75% (Sec. III.B)", f"-{PAPER_FLOPS_CUT:.0%}",
                  f"LWRefineNet vs RefineNet at {size}: {_pct(-flops_cut)}", _verdict(flops_cut > PAPER_FLOPS_CUT))]


def _headline_claim(results: dict[str, Any]) -> list[Claim]:
    runs, test, blurry = results.get("runs", {}), results.get("test", {}), results.get("val_blurry")
    if HEADLINE not in runs or HEADLINE not in test or blurry is None:
        return []
    val = runs[HEADLINE]["val"]
    val_gain, test_gain = val["psnr"] - blurry["psnr"], test[HEADLINE]["psnr"] - test["blurry"]["psnr"]
    ssim_up = val["ssim"] > blurry["ssim"] and test[HEADLINE]["ssim"] > test["blurry"]["ssim"]
    return [Claim("MRFNet deblurs: it beats the blurry input on held-out photographs", "yes (Table II)",
                  f"val {val_gain:+.2f} dB, test {test_gain:+.2f} dB; SSIM {'up' if ssim_up else 'not up'} on both",
                  _verdict(val_gain > 0 and test_gain > 0 and ssim_up))]


def _ablation_claims(results: dict[str, Any], curves: dict[str, dict[str, list[float]]]) -> list[Claim]:
    stats = {v: seed_stats(results, v, "l2") for v in VARIANT_ORDER}
    found = []
    if all(stats.values()):
        others = [v for v in VARIANT_ORDER if v != "mrfnet"]
        rival = max(others, key=lambda v: stats[v].mean)
        difference, noise, verdict = compare(stats["mrfnet"], stats[rival], floor=PSNR_FLOOR_DB)
        found.append(Claim("MRFNet gives the best PSNR of the four variants (Table V)", "MRFNet 29.41 dB best",
                           f"val, single L2, mean ± half-spread of {len(stats['mrfnet'].values)} seeds: MRFNet "
                           f"{stats['mrfnet'].text()} dB vs best other ({rival}) {stats[rival].text()}: "
                           f"{difference:+.2f} dB, noise {noise:.2f}", verdict))
        pairs = [compare(stats[v], stats["refinenet"], floor=PSNR_FLOOR_DB) for v in ("lwrefinenet", "rcrefinenet")]
        verdicts = {v for _, _, v in pairs}
        verdict = (CONTRADICTED if CONTRADICTED in verdicts else CONFIRMED if verdicts == {CONFIRMED}
                   else WITHIN_NOISE)
        found.append(Claim("LWRefineNet and RCRefineNet beat RefineNet (Table V)", "+0.50 / +0.30 dB",
                           f"val: {pairs[0][0]:+.2f} / {pairs[1][0]:+.2f} dB (noise {pairs[0][1]:.2f} / "
                           f"{pairs[1][1]:.2f})", verdict))
    seeds = results["settings"]["seeds"]
    scale_runs = [ablation_run("mrfnet", "scale", s) for s in seeds]
    single_runs = [ablation_run("mrfnet", "l2", s) for s in seeds]
    if all(run in curves for run in scale_runs + single_runs):
        scale = SeedStats(tuple(tail_mean(curves[run]["loss_r4"]) for run in scale_runs))
        single = SeedStats(tuple(tail_mean(curves[run]["loss_r4"]) for run in single_runs))
        difference, noise, verdict = compare(scale, single, floor=LOSS_FLOOR * single.mean, lower_is_better=True)
        found.append(Claim("The scale refinement loss converges faster than a single full-resolution L2 (Fig. 5)",
                           "final loss ~4% vs ~6%",
                           f"MRFNet's full-resolution training loss over the last 20%: {scale.text(5)} (scale loss) "
                           f"vs {single.text(5)} (single L2), noise {noise:.5f}", verdict))
    return found


def _cost_claims(timing: dict[str, Any], memory: dict[str, Any], memory_rss: dict[str, Any]) -> list[Claim]:
    found = []
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
        measured = {v: rss.get(batch) for v, rss in memory_rss.items()}
        how = "peak RSS" if measured.get("mrfnet") and measured.get("refinenet") else "counted"
        table = measured if how == "peak RSS" else {v: m[batch] for v, m in memory.items()}
        light, heavy = table["mrfnet"], table["refinenet"]
        paper = PAPER_TABLE_III.get(int(batch))
        found.append(Claim("The lightweight process keeps memory low (Table III)",
                           f"{paper} MB per GPU at batch {batch} per GPU" if paper else "low",
                           f"training memory per GPU at batch {batch}, 256x256, {how}: MRFNet {light:.0f} MB "
                           f"vs RefineNet {heavy:.0f} MB (counted {memory['mrfnet'][batch]:.0f} / "
                           f"{memory['refinenet'][batch]:.0f} MB)", _verdict(light < heavy)))
    return found


def claims(results: dict[str, Any], curves: dict[str, dict[str, list[float]]]) -> list[Claim]:
    """One line per claim of the paper that this run can speak to."""
    return (_size_claims(results.get("table1", {})) + _headline_claim(results) + _ablation_claims(results, curves)
            + _cost_claims(results.get("timing", {}), results.get("memory", {}), results.get("memory_rss", {})))


def _paper_scores(name: str) -> str:
    if name not in PAPER_TABLE_V:
        return "-"
    psnr, ssim = PAPER_TABLE_V[name]
    return f"{psnr:.2f} / {ssim:.3f}"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _intro(results: dict[str, Any]) -> list[str]:
    settings, data = results["settings"], results["data"]
    photos = results.get("photographs", {})
    splits = "; ".join(f"{split}: {', '.join(names)}" for split, names in photos.items())
    return [f"# MRFNet reproduction report: {results['name']}", "",
            f"Made by `{results['command']}` on {results['date']}, {results['machine']}; "
            f"{results['seconds']['total']:.0f} s in all.", "",
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
            f"photograph). Photographs by split: {splits}. The paper trains 50-70 epochs on GOPRO/VisDrone with "
            "four GPUs: absolute numbers here are not comparable to its tables.", ""]


def _score_sections(results: dict[str, Any]) -> list[str]:
    out = []
    runs, test, blurry, data = results.get("runs", {}), results.get("test", {}), results.get("val_blurry"), \
        results["data"]
    if HEADLINE in runs and blurry:
        val = runs[HEADLINE]["val"]
        rows = [["blurry input", f"{blurry['psnr']:.2f}", f"{blurry['ssim']:.4f}",
                 f"{test['blurry']['psnr']:.2f}" if test else "-", f"{test['blurry']['ssim']:.4f}" if test else "-"],
                ["MRFNet", f"{val['psnr']:.2f}", f"{val['ssim']:.4f}",
                 f"{test[HEADLINE]['psnr']:.2f}" if test else "-", f"{test[HEADLINE]['ssim']:.4f}" if test else "-"]]
        if test:
            rows.append(["gain", f"{val['psnr'] - blurry['psnr']:+.2f}", f"{val['ssim'] - blurry['ssim']:+.4f}",
                         f"{test[HEADLINE]['psnr'] - test['blurry']['psnr']:+.2f}",
                         f"{test[HEADLINE]['ssim'] - test['blurry']['ssim']:+.4f}"])
        out += ["## Headline: MRFNet on held-out photographs (Table II analogue)", "",
                _table(["", f"val PSNR ({blurry.get('images', data['val'])} patches)", "val SSIM",
                        f"test PSNR ({data['test']} images)",
                        "test SSIM"], rows), "",
                "Neither split is trained on. The val scores are those of the run's last validation (the same "
                "code path as `mrfnet score`); the test scores come from `mrfnet score` on the whole images. "
                f"Metric: {results.get('metric', 'skimage SSIM, RGB, no border crop')}; outputs rounded to uint8.",
                ""]
    rows = []
    for group, label in ABLATION_GROUPS.items():
        for variant in VARIANT_ORDER:
            psnr, ssim = seed_stats(results, variant, group), seed_stats(results, variant, group, "ssim")
            if psnr is None:
                continue
            rows.append([variant, label, " / ".join(f"{v:.2f}" for v in psnr.values), psnr.text(),
                         ssim.text(4), _paper_scores(variant) if group == "l2" else "-"])
    if rows and blurry:
        out += ["## Table V analogue: the ablation on val, over seeds", "",
                _table(["variant", "loss", "val PSNR per seed", "mean ± half-spread", "val SSIM", "paper, VisDrone"],
                       rows), "",
                f"Blurry input on val: {blurry['psnr']:.2f} dB / {blurry['ssim']:.4f}. A difference between two "
                "settings counts only when it is larger than the larger of their seed spreads (max - min); "
                "the claims above say 'within noise' otherwise.", ""]
    return out


def _sections(results: dict[str, Any], curves: dict[str, dict[str, list[float]]], report_dir: Path) -> list[str]:
    out = _intro(results)
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
    out += _score_sections(results)
    validated = [run for run in curves if val_points(curves[run])[0]]
    if validated:
        _plot_val(curves, validated, report_dir / "val_curves.png")
        out += ["## Validation while training", "", "![val curves](val_curves.png)", "",
                "Every run's val PSNR gain over the blurry input (`mrfnet train --val-every`), at each validation.",
                ""]
    first_seed = results["settings"]["seeds"][0]
    ablation = [ablation_run(v, "l2", first_seed) for v in VARIANT_ORDER]
    if all(run in curves for run in ablation):
        _plot_losses(curves, ablation, report_dir / "loss_curves.png",
                     f"Training loss at full resolution, single L2, seed {first_seed} (Fig. 5 analogue)")
        out += ["## Fig. 5 analogue: training loss", "", "![training loss](loss_curves.png)", ""]
        seeds = results["settings"]["seeds"]
        pair = [ablation_run("mrfnet", group, seed) for group in ABLATION_GROUPS for seed in seeds]
        if all(run in curves for run in pair):
            _plot_losses(curves, pair, report_dir / "scale_vs_single.png",
                         "MRFNet: scale refinement loss vs a single full-resolution L2")
            out += ["MRFNet on the ablation budget, trained with the scale refinement loss and with a single "
                    "full-resolution L2 (`--loss-schedule full-only`), every seed.", "",
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
        rss = results.get("memory_rss", {})
        rows = [[v, *[f"{m[b]:.0f}" for b in batches], *[_mb(rss.get(v, {}).get(b)) for b in batches]]
                for v, m in memory.items()]
        rows.append(["MRFNet in the paper (GPU)", *[_mb(PAPER_TABLE_III.get(int(b))) for b in batches],
                     *["" for _ in batches]])
        out += ["## Table III analogue: training memory per GPU (MB)", "",
                _table(["variant", *[f"batch {b} counted" for b in batches], *[f"batch {b} peak RSS" for b in batches]],
                       rows), "", results.get("memory_note", ""),
                "The paper's batches of 8 (GOPRO) and 16 (VisDrone) are over four GPUs: 2 and 4 per GPU.", ""]
    montages = results.get("montages", [])
    if montages:
        out += ["## Montages: blurred | deblurred (headline MRFNet) | sharp", ""]
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
