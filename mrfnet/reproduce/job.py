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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_prep.atomic import write_json_atomic
from data_prep.build import build_dataset
from data_prep.options import BuildOptions
from data_prep.sources import EMBEDDED
from mrfnet.analyze import layer_counts
from mrfnet.analyze.timing import time_variants
from mrfnet.evaluate.scoring import ScoreOptions, score_model
from mrfnet.evaluate.testsets import open_test_set
from mrfnet.reproduce.claims import HEADLINE, ablation_run, read_curve
from mrfnet.reproduce.paper import PAPER_TABLE_III
from mrfnet.reproduce.real_blur import RealBlur, prepare_real_blur, real_blur_facts
from mrfnet.reproduce.report import CURVES, REPORT, RESULTS, VARIANT_ORDER, summary_lines, write_report
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


PAPER_VARIANTS = VARIANT_ORDER  # the paper's four, listed explicitly (mrfnet.reproduce.claims), not netgen's registry


@dataclass(frozen=True)
class Budget:
    """How much work each stage does: the only difference between the full job and --quick."""

    headline_iterations: int
    ablation_iterations: int
    seeds: tuple[int, ...]  # each ablation run is repeated once per seed: the spread is its noise
    batch_size: int
    crop_size: int
    ablation_crop_size: int
    patch_size: int
    copies: int
    test_copies: int  # blur draws of each whole test photograph
    max_motion: int  # longest motion blur of the embedded set (see docs/architecture.md, "Training on a small budget")
    base_lr: float
    halvings: int
    loss_schedule: str  # the scale refinement loss's weights over a run (headline and mrfnet-scale runs)
    headline_validations: int  # val scores of the headline run (the last at its final iteration)
    ablation_validations: int  # val scores of each ablation run
    val_limit: int | None  # val records scored (None: all)
    timing_sizes: tuple[tuple[int, int], ...]  # (height, width)
    timing_repeats: int
    memory_batches: tuple[int, ...]
    memory_side: int
    memory_run: bool  # also run each training memory case (peak RSS) where it fits, not only count it
    caffe_time: bool  # also run `caffe time` beside the Python timing
    precision: str  # the training runs' (de)convolution arithmetic (netgen.engine.PRECISIONS)
    minutes: int  # what the whole job takes on the 2-core development machine, said when it starts
    real_blur: RealBlur = RealBlur()


FULL = Budget(
    headline_iterations=5000, ablation_iterations=360, seeds=(0, 1), batch_size=4, crop_size=64, ablation_crop_size=48,
    patch_size=96, copies=1, test_copies=8, max_motion=5, base_lr=5e-4, halvings=3, loss_schedule="uniform",
    headline_validations=10, ablation_validations=2, val_limit=None, timing_sizes=((256, 256), (720, 1280)),
    timing_repeats=1, memory_batches=tuple(PAPER_TABLE_III), memory_side=256, memory_run=True,
    caffe_time=False, precision="fp32", minutes=50)


QUICK = Budget(
    headline_iterations=12, ablation_iterations=6, seeds=(0, 1), batch_size=2, crop_size=32, ablation_crop_size=32,
    patch_size=48, copies=1, test_copies=1, max_motion=5, base_lr=2e-4, halvings=3, loss_schedule="uniform",
    headline_validations=2, ablation_validations=2, val_limit=8, timing_sizes=((64, 64),), timing_repeats=1,
    memory_batches=tuple(PAPER_TABLE_III), memory_side=64, memory_run=True, caffe_time=False, precision="fp32",
    minutes=5, real_blur=RealBlur(step=25))


MONTAGE_IMAGES = 2  # test images in the headline's montage: whole photographs as PNG are large; the report is committed


@dataclass(frozen=True)
class RunSpec:
    """One training run of the main job."""

    variant: str
    loss_schedule: str
    iterations: int
    crop_size: int
    seed: int
    group: str  # "headline" or the ablation it belongs to ("l2" or "scale")
    validations: int


DEFAULT_NAME = "embedded-cpu"


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


def prepare_data(work_dir: Path, budget: Budget) -> dict[str, Any]:
    """The embedded LMDBs, built once per work folder."""

    data = work_dir / "data"
    summary_path = data / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        wanted = {"patch_size": budget.patch_size, "copies": budget.copies, "test_copies": budget.test_copies,
                  "max_motion": budget.max_motion, "blur_per": "patch"}
        if all(summary.get(key) == value for key, value in wanted.items()):
            log.info("reusing the embedded data in %s", data)
            return summary
        log.info("the embedded data in %s was built with other settings: rebuilding it", data)
    return build_dataset(BuildOptions(source="embedded", out=data, patch_size=budget.patch_size,
                                      copies=budget.copies, test_copies=budget.test_copies,
                                      max_motion=budget.max_motion, blur_per="patch", force=True))


def table1() -> dict[str, Any]:
    """Parameters and multiply-adds of each variant's deploy net at Table I's sizes (256x256, 1280x720)."""

    results = {}
    for variant in PAPER_VARIANTS:
        totals = layer_counts.totals(layer_counts.variant_tables(variant))
        results[variant] = {"params": totals.params,
                            "macs": {size_label(h, w): macs
                                     for (h, w), macs in zip(layer_counts.SIZES, totals.macs, strict=True)}}
    return results


def run_plan(budget: Budget) -> dict[str, RunSpec]:
    """Run name -> spec: the headline MRFNet, then per seed the four variants with a single full-resolution L2
    (Table V's ablation) and MRFNet with the scale refinement loss (Fig. 5's comparison), all on one budget."""
    plan = {HEADLINE: RunSpec("mrfnet", budget.loss_schedule, budget.headline_iterations, budget.crop_size,
                                     0, "headline", budget.headline_validations)}
    for seed in budget.seeds:
        for variant in PAPER_VARIANTS:
            plan[ablation_run(variant, "l2", seed)] = RunSpec(
                variant, "full-only", budget.ablation_iterations, budget.ablation_crop_size, seed, "l2",
                budget.ablation_validations)
        plan[ablation_run("mrfnet", "scale", seed)] = RunSpec(
            "mrfnet", budget.loss_schedule, budget.ablation_iterations, budget.ablation_crop_size, seed, "scale",
            budget.ablation_validations)
    return plan


def train_run(work_dir: Path, name: str, spec: RunSpec, budget: Budget, records: int) -> Path:
    """Train one run to its budget: reuse it when finished, resume it when interrupted."""
    run_dir = work_dir / "runs" / name
    final = run_dir / SNAPSHOT_DIR / f"{spec.variant}_iter_{spec.iterations}.caffemodel"
    if final.is_file():
        log.info("%s: already trained (%s)", name, final)
        return final
    epochs = spec.iterations * budget.batch_size / records
    options = TrainOptions(variant=spec.variant, data=str(work_dir / "data"), run_dir=str(run_dir),
                           batch_size=budget.batch_size, crop_size=spec.crop_size, epochs=epochs,
                           iterations=spec.iterations, base_lr=budget.base_lr,
                           halve_every_epochs=epochs / (budget.halvings + 1),
                           snapshot_every=spec.iterations, loss_schedule=spec.loss_schedule, seed=spec.seed,
                           val_every=max(1, spec.iterations // spec.validations), val_limit=budget.val_limit,
                           precision=budget.precision)
    if run_dir.exists() and _stored_options(run_dir) != asdict(options):
        log.info("%s: the run folder holds a run of another plan: training it again", name)
        shutil.rmtree(run_dir)
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
        data = prepare_data(work_dir, budget)
        real = prepare_real_blur(work_dir, budget.real_blur)
    with stages.stage("table1"):
        sizes = table1()
    with stages.stage("train"):
        runs = _train_runs(work_dir, report_dir, budget, data["splits"]["train"]["records"])
    val_blurry = blurry_val(work_dir / "runs" / HEADLINE)
    with stages.stage("score"):
        headline = work_dir / runs[HEADLINE]["caffemodel"]
        test, montages = _score_headline(work_dir, report_dir, headline, "test", work_dir / "data" / "test_lmdb")
        test_real, real_montages = _score_headline(work_dir, report_dir, headline, "real",
                                                   work_dir / "data-real" / "test_lmdb")
    with stages.stage("time"):
        timed = time_variants(PAPER_VARIANTS, sizes=budget.timing_sizes, repeats=budget.timing_repeats,
                              memory_batches=budget.memory_batches, memory_side=budget.memory_side,
                              caffe_time=budget.caffe_time, run_training=budget.memory_run)
    timing, memory, timing_note, memory_note = timed
    total = stages.total()
    results = {
        "name": name, "command": command, "date": datetime.date.today().isoformat(), "machine": machine(),
        "engine": convolution_engine(),
        "settings": asdict(budget), "data": {split: info["records"] for split, info in data["splits"].items()},
        "photographs": photographs(), "table1": sizes, "runs": runs, "val_blurry": val_blurry, "test": test,
        "test_real": test_real, "real_blur": real_blur_facts(real),
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


def _train_runs(work_dir: Path, report_dir: Path, budget: Budget, records: int) -> dict[str, dict[str, Any]]:
    """Train (or reuse, or resume) every run of the plan; each one's curve goes into the report folder."""
    runs: dict[str, dict[str, Any]] = {}
    for run_name, spec in run_plan(budget).items():
        run_started = time.monotonic()
        caffemodel = train_run(work_dir, run_name, spec, budget, records)
        run_dir = work_dir / "runs" / run_name
        shutil.copyfile(run_dir / PROGRESS, report_dir / CURVES / f"{run_name}.csv")
        runs[run_name] = {**asdict(spec), "caffemodel": os.path.relpath(caffemodel, work_dir),
                          "val": final_val(run_dir, spec.iterations),
                          "seconds": round(time.monotonic() - run_started, 1)}
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
