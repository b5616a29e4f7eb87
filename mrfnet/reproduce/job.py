"""The main job: data, Table I, the headline MRFNet and the ablations, scoring and timing, into one report."""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from data_prep.atomic import write_json_atomic
from data_prep.sources import EMBEDDED
from mrfnet.analyze import layer_counts
from mrfnet.analyze.timing import time_variants
from mrfnet.evaluate.scoring import ScoreOptions, score_model
from mrfnet.evaluate.testsets import open_test_set
from mrfnet.reproduce.blur_lengths import score_lengths
from mrfnet.reproduce.budgets import PAPER_VARIANTS, PROFILES, Budget, RunSpec, headline_motion, run_plan
from mrfnet.reproduce.claims import HEADLINE, read_curve
from mrfnet.reproduce.convergence import training_seconds
from mrfnet.reproduce.datasets import data_dir, prepare_all
from mrfnet.reproduce.real_blur import gains_by_blur, prepare_real_blur, real_blur_facts
from mrfnet.reproduce.report import CURVES, REPORT, RESULTS, summary_lines, write_report
from mrfnet.runtime.caffe_env import run_isolated
from mrfnet.runtime.doctor import probe_caffe
from mrfnet.runtime.folder_lock import holding
from mrfnet.runtime.machine import cpu_model
from mrfnet.runtime.run_files import BEST_RECORD, DEPLOY, OPTIONS, PROGRESS, SNAPSHOT_DIR
from mrfnet.train.driver import train
from mrfnet.train.options import TrainOptions
from mrfnet.train.run_setup import prepare_run
from netgen.sizes import size_label

log = logging.getLogger(__name__)


MONTAGE_IMAGES = 2  # test images in the headline's montage: whole photographs as PNG are large; the report is committed


DEFAULT_NAME = PROFILES["demo"][1]  # the demo's report and work folder names


def default_work_dir(name: str) -> Path:
    return Path("runs") / f"reproduce-{name}"


def main_job_model() -> Path:
    """The headline run folder of the default main job (what `mrfnet deblur` uses without --model)."""
    return default_work_dir(DEFAULT_NAME) / "runs" / HEADLINE


def machine() -> str:
    """CPU model and core count, as the report states them."""

    return f"{cpu_model()}, {os.cpu_count()} cores, CPU-only Caffe"


def convolution_engine() -> str:
    """Which engine ran the (de)convolutions, as the report states it."""
    caffe = run_isolated(probe_caffe, timeout=120)
    if caffe["dnnl"]:
        return f"Caffe's DNNL engine (oneDNN {caffe['dnnl_version']})"
    return "Caffe's own im2col + BLAS engine"


def table1() -> dict[str, Any]:
    """Parameters and multiply-adds of each variant's deploy net at Table I's sizes (256x256, 1280x720)."""

    results = {}
    for variant in PAPER_VARIANTS:
        totals = layer_counts.totals(layer_counts.variant_tables(variant))
        results[variant] = {"params": totals.params,
                            "macs": {size_label(h, w): macs
                                     for (h, w), macs in zip(layer_counts.SIZES, totals.macs, strict=True)}}
    return results


def train_run(work_dir: Path, name: str, spec: RunSpec, budget: Budget, records: int) -> Path:
    """Train one run to its budget: reuse it when finished, resume it when interrupted, train it again when its
    folder holds a run of other settings (another recipe or data)."""
    run_dir = work_dir / "runs" / name
    final = run_dir / SNAPSHOT_DIR / f"{spec.variant}_iter_{spec.iterations}.caffemodel"
    epochs = spec.iterations * budget.batch_size / records
    options = TrainOptions(variant=spec.variant, data=str(data_dir(work_dir, budget, spec.max_motion).resolve()),
                           run_dir=str(run_dir),
                           batch_size=budget.batch_size, crop_size=spec.crop_size, epochs=epochs,
                           iterations=spec.iterations, base_lr=budget.base_lr,
                           halve_every_epochs=epochs / (budget.halvings + 1),
                           snapshot_every=spec.iterations, loss_schedule=spec.loss_schedule, seed=spec.seed,
                           val_every=max(1, spec.iterations // spec.validations), val_limit=budget.val_limit,
                           precision=budget.precision, coarse_output_lr_mult=spec.coarse_output_lr_mult)
    if run_dir.exists() and _stored_options(run_dir) != asdict(options):  # data as the run stores it: resolved
        log.info("%s: the run folder holds a run of another plan: training it again", name)
        shutil.rmtree(run_dir)
    if final.is_file():
        log.info("%s: already trained (%s)", name, final)
        return final
    if run_dir.exists():
        log.info("%s: resuming from its newest snapshot that verifies", name)
        with holding(run_dir):  # a `mrfnet train --resume` of it meanwhile is refused, naming this process
            result = train(run_dir, resume=True)
    else:
        run_dir = prepare_run(options, ["mrfnet", "reproduce"], keep_lock=True)
        with holding(run_dir):
            result = train(run_dir)
    if result.status != "finished" or result.snapshot != final:
        raise RuntimeError(f"{name} stopped at iteration {result.iteration}: run `mrfnet reproduce` again to resume")
    return final


def _stored_options(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / OPTIONS
    return json.loads(path.read_text()) if path.is_file() else None


def final_val(run_dir: Path, iterations: int) -> dict[str, float]:
    """The val scores of a run's final weights, from the last validation row of its progress.csv."""
    curve = read_curve(run_dir / PROGRESS)
    rows = [i for i, value in enumerate(curve.get("val_psnr", [])) if value == value]  # not NaN: validated there
    if not rows or curve["iteration"][rows[-1]] != iterations:
        raise RuntimeError(f"{run_dir} has no validation at iteration {iterations}: delete it and run again")
    last = rows[-1]
    return {"psnr": curve["val_psnr"][last], "ssim": curve["val_ssim"][last],
            "gain_db": curve["val_gain_db"][last]}


def blurry_val(run_dir: Path) -> dict[str, float]:
    best = json.loads((run_dir / BEST_RECORD).read_text())
    return {"psnr": best["blur_psnr"], "ssim": best["blur_ssim"], "images": best["images"]}


def reproduce(name: str, work_dir: Path, report_root: Path, budget: Budget, command: str) -> Path:
    """Every stage, then the report; returns the report folder."""

    work_dir.mkdir(parents=True, exist_ok=True)
    with holding(work_dir):  # a second main job on this work folder is refused, naming this one
        return _reproduce(name, work_dir, report_root, budget, command)


class _Stages:
    """Seconds per stage of the main job, logged as each ends."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, label: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.seconds[label] = round(time.monotonic() - started, 1)
        log.info("stage %s done in %.1f s", label, self.seconds[label])

    def total(self) -> float:
        self.seconds["total"] = round(time.monotonic() - self.began, 1)
        return self.seconds["total"]


def _reproduce(name: str, work_dir: Path, report_root: Path, budget: Budget, command: str) -> Path:
    log.info("the main job (%s): about %d minutes on a 2-core CPU with Caffe built; work folder %s",
             name, budget.minutes, work_dir)
    stages = _Stages()
    report_dir = report_root / name
    if (report_dir / CURVES).is_dir():
        shutil.rmtree(report_dir / CURVES)  # curves of an older plan must not linger
    (report_dir / CURVES).mkdir(parents=True)
    with stages.stage("data"):
        datasets = prepare_all(work_dir, budget)
        real = prepare_real_blur(work_dir, budget.real_blur)
    with stages.stage("table1"):
        sizes = table1()
    with stages.stage("train"):
        runs = _train_runs(work_dir, report_dir, budget, datasets)
    val_blurry = blurry_val(work_dir / "runs" / HEADLINE)
    ablation = next(run for run in runs if run != HEADLINE)  # every ablation run validates on the same data
    ablation_val_blurry = blurry_val(work_dir / "runs" / ablation)
    with stages.stage("score"):
        headline = work_dir / runs[HEADLINE]["caffemodel"]
        test, montages = _score_headline(work_dir, report_dir, headline, "test",
                                         data_dir(work_dir, budget, headline_motion(budget)) / "test_lmdb")
        test_real, real_montages = _score_headline(work_dir, report_dir, headline, "real",
                                                   work_dir / "data-real" / "test_lmdb")
        lengths = score_lengths(work_dir, headline, budget.blur_lengths)
    with stages.stage("time"):
        timed = time_variants(PAPER_VARIANTS, sizes=budget.timing_sizes, repeats=budget.timing_repeats,
                              memory_batches=budget.memory_batches, memory_side=budget.memory_side,
                              caffe_time=budget.caffe_time, run_training=budget.memory_run)
    timing, memory, timing_note, memory_note = timed
    total = stages.total()
    stages.seconds["work"] = work_seconds(stages.seconds, runs)
    results = {
        "name": name, "command": command, "date": datetime.date.today().isoformat(), "machine": machine(),
        "engine": convolution_engine(),
        "settings": asdict(budget), "data": _records(datasets["data"]),
        "headline_data": _records(datasets["headline"]), "blur_lengths": lengths,
        "photographs": photographs(), "table1": sizes, "runs": runs, "val_blurry": val_blurry,
        "ablation_val_blurry": ablation_val_blurry, "test": test,
        "test_real": test_real, "real_blur": {**real_blur_facts(real), "by_blur": gains_by_blur(
            work_dir / "scores" / "real" / HEADLINE / "images.csv", work_dir / "data-real" / "test_lmdb")},
        "timing": timing, "timing_note": timing_note, "memory": memory, "memory_rss": timed.memory_rss,
        "memory_note": memory_note,
        "montages": montages + real_montages, "seconds": stages.seconds,
        "metric": "skimage SSIM (Gaussian, sigma 1.5), PSNR on RGB 0..255, no border crop",
    }
    write_json_atomic(report_dir / RESULTS, results)
    write_report(report_dir)
    for line in summary_lines(report_dir):
        log.info("%s", line)
    log.info("report: %s (%.0f s in all)", report_dir / REPORT, total)
    return report_dir


def work_seconds(seconds: dict[str, float], runs: dict[str, dict[str, Any]]) -> float:
    """The whole profile's wall time as if it had run in one call: this call's stages, with the training stage
    counted from each run's curve, so runs trained by earlier calls (the job resumes run by run) count too."""
    trained = sum(run["trained_seconds"] or run["seconds"] for run in runs.values())
    return round(seconds["total"] - seconds["train"] + max(trained, seconds["train"]), 1)


def _records(summary: dict[str, Any]) -> dict[str, int]:
    return {split: info["records"] for split, info in summary["splits"].items()}


def _train_runs(work_dir: Path, report_dir: Path, budget: Budget,
                datasets: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Train (or reuse, or resume) every run of the plan; each one's curve goes into the report folder."""
    runs: dict[str, dict[str, Any]] = {}
    by_motion = {budget.max_motion: datasets["data"], headline_motion(budget): datasets["headline"]}  # as data_dir
    for run_name, spec in run_plan(budget).items():
        run_started = time.monotonic()
        summary = by_motion[spec.max_motion]
        caffemodel = train_run(work_dir, run_name, spec, budget, summary["splits"]["train"]["records"])
        run_dir = work_dir / "runs" / run_name
        shutil.copyfile(run_dir / PROGRESS, report_dir / CURVES / f"{run_name}.csv")
        runs[run_name] = {**asdict(spec), "caffemodel": os.path.relpath(caffemodel, work_dir),
                          "val": final_val(run_dir, spec.iterations),
                          "seconds": round(time.monotonic() - run_started, 1),  # ~0 when reused
                          "trained_seconds": training_seconds(read_curve(run_dir / PROGRESS))}
    return runs


def _score_headline(work_dir: Path, report_dir: Path, headline: Path, name: str,
                    lmdb: Path) -> tuple[dict[str, Any], list[str]]:
    """The headline model's scores on one held-out set beside the blurry input's, and its montage in the report
    folder (montage_mrfnet.png for the test photographs, montage_mrfnet_<name>.png for another set)."""
    result = score_model(headline.parents[1] / DEPLOY, headline, open_test_set(test_lmdb=lmdb),
                         out_dir=work_dir / "scores" / name / HEADLINE,
                         options=ScoreOptions(montage=True, montage_limit=MONTAGE_IMAGES))
    montages = []
    if result.montage is not None:
        montages.append(f"montage_{HEADLINE}.png" if name == "test" else f"montage_{HEADLINE}_{name}.png")
        shutil.copyfile(result.montage, report_dir / montages[-1])
    return {"blurry": result.baseline, HEADLINE: result.mean}, montages


def photographs() -> dict[str, list[str]]:
    """Split -> the embedded photographs in it (by package and file), as the report states them."""

    splits: dict[str, list[str]] = {}
    for (package, _, file_name), split in EMBEDDED.items():
        splits.setdefault(split, []).append(f"{file_name} ({package})")
    return splits
