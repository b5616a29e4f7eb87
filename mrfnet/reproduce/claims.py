"""The paper's claims checked against the measured results: each a verdict, never closer than the noise."""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrfnet.reproduce.convergence import (
    is_flat,
    iterations_to_flat,
    iterations_to_reach,
    last_quarter_rise,
    val_points,
)
from mrfnet.reproduce.paper import PAPER_FLOPS_CUT, PAPER_LW_TIME_1280, PAPER_PARAMS_CUT, PAPER_TABLE_III

log = logging.getLogger(__name__)

# The paper's Table V ablation, in its order: what the main job sizes, trains, times and reports. Listed here,
# not read from netgen's registry, so a newly registered variant does not join (and lengthen) the main job.
VARIANT_ORDER = ("refinenet", "lwrefinenet", "rcrefinenet", "mrfnet")


HEADLINE = "mrfnet"  # the main job's MRFNet: scale refinement loss, most of the budget


ABLATION_GROUPS = {"l2": "single full-resolution L2", "scale": "scale refinement loss"}


CONFIRMED, NOT_CONFIRMED, NOT_MEASURABLE = "confirmed", "not confirmed", "not measurable here"


CONTRADICTED, WITHIN_NOISE = "contradicted", "within noise"


UNDECIDED = "undecided at this budget"  # the runs it rests on were still improving (mrfnet.reproduce.convergence)


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
    seeds = results["settings"]["seeds"]
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
        l2_runs = [ablation_run(v, "l2", seed) for v in VARIANT_ORDER for seed in seeds]
        found = [at_convergence(claim, l2_runs, results, curves) for claim in found]
    scale_runs = [ablation_run("mrfnet", "scale", s) for s in seeds]
    single_runs = [ablation_run("mrfnet", "l2", s) for s in seeds]
    if all(run in curves for run in scale_runs + single_runs):
        found.append(at_convergence(fig5_claim(results, curves, scale_runs, single_runs), scale_runs + single_runs,
                                    results, curves))
    return found


def at_convergence(claim: Claim, runs: list[str], results: dict[str, Any],
                   curves: dict[str, dict[str, list[float]]]) -> Claim:
    """``claim`` as it stands when every run it rests on has a flat val curve; else undecided, with how far the
    curves still rose and the run length at which they would flatten (extrapolated)."""
    flat_db = results["settings"].get("flat_db", 0.05)
    rising = [run for run in runs if run in curves and not is_flat(curves[run], flat_db)]
    if not rising:
        return Claim(claim.text, claim.paper, f"{claim.measured}; all {len(runs)} curves flat", claim.verdict)
    rises = [rise for rise in (last_quarter_rise(curves[run]) for run in rising) if rise is not None]
    needed = [n for n in (iterations_to_flat(curves[run], flat_db) for run in rising) if n is not None]
    rose = f", up to {max(rises):+.2f} dB over their last quarter" if rises else ""
    budget = (f"; they would flatten (rise under {flat_db:g} dB) by about {max(needed):,} iterations per run "
              "(extrapolated)" if needed else "")
    return Claim(claim.text, claim.paper, f"{claim.measured}; {len(rising)} of {len(runs)} curves still rising"
                 f"{rose}{budget}; verdict at this budget: {claim.verdict}", UNDECIDED)


def fig5_claim(results: dict[str, Any], curves: dict[str, dict[str, list[float]]], scale_runs: list[str],
               single_runs: list[str]) -> Claim:
    """Fig. 5: does the scale loss converge faster? Iterations to reach a val gain both settings reach (80% of
    the lower of their final mean gains), compared over seeds; where a run never reaches it, the final
    full-resolution training loss instead."""
    finals = {group: [val_points(curves[run], "val_gain_db")[1][-1] for run in runs]
              for group, runs in (("scale", scale_runs), ("l2", single_runs))}
    target = 0.8 * min(sum(values) / len(values) for values in finals.values())
    reach = {group: [iterations_to_reach(curves[run], target) for run in runs]
             for group, runs in (("scale", scale_runs), ("l2", single_runs))}
    if target > 0 and all(value is not None for values in reach.values() for value in values):
        scale, single = SeedStats(tuple(reach["scale"])), SeedStats(tuple(reach["l2"]))
        difference, noise, verdict = compare(scale, single, floor=1.0, lower_is_better=True)
        measured = (f"iterations to reach +{target:.2f} dB on val: {scale.text(0)} (scale loss) vs "
                    f"{single.text(0)} (single L2), noise {noise:.0f}")
    else:
        scale = SeedStats(tuple(tail_mean(curves[run]["loss_r4"]) for run in scale_runs))
        single = SeedStats(tuple(tail_mean(curves[run]["loss_r4"]) for run in single_runs))
        difference, noise, verdict = compare(scale, single, floor=LOSS_FLOOR * single.mean, lower_is_better=True)
        measured = (f"MRFNet's full-resolution training loss over the last 20%: {scale.text(5)} (scale loss) vs "
                    f"{single.text(5)} (single L2), noise {noise:.5f}")
    final = {group: sum(values) / len(values) for group, values in finals.items()}
    return Claim("The scale refinement loss converges faster than a single full-resolution L2 (Fig. 5)",
                 "final loss ~4% vs ~6%", f"{measured}; final val gain {final['scale']:+.2f} vs {final['l2']:+.2f} dB",
                 verdict)


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
