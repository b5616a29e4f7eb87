"""`mrfnet reproduce`: the paper's pipeline end to end on the embedded set, small enough for a 2-core CPU.

data-prep (embedded) -> netgen (Table I) -> train the four variants and MRFNet with a single L2
under one budget -> score on the held-out split -> time and memory -> reports/<name>/report.md.
Work lives in --work-dir (data and run folders): a second call reuses finished runs and resumes
interrupted ones, so it is fast and loses nothing. --quick is the few-minute version CI runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mrfnet import report
from mrfnet.train import SNAPSHOT_DIR, TrainOptions, latest_solverstate, prepare_run, train

log = logging.getLogger(__name__)

VARIANTS = report.VARIANT_ORDER


@dataclass(frozen=True)
class Budget:
    """How much work each stage does: the only difference between the full job and --quick."""

    iterations: int
    batch_size: int
    crop_size: int
    patch_size: int
    copies: int  # blur realisations per photograph: five photographs need several to teach more than five kernels
    base_lr: float
    timing_sizes: tuple[tuple[int, int], ...]  # (height, width)
    timing_repeats: int
    memory_batches: tuple[int, ...]
    memory_side: int
    caffe_time: bool  # also run `caffe time` beside the Python timing


# Full: about 30 minutes on 2 cores (see the README's Results for the measured time).
FULL = Budget(iterations=300, batch_size=4, crop_size=64, patch_size=96, copies=4, base_lr=5e-4,
              timing_sizes=((256, 256), (720, 1280)), timing_repeats=2, memory_batches=(8, 16), memory_side=256,
              caffe_time=True)
QUICK = Budget(iterations=12, batch_size=2, crop_size=32, patch_size=48, copies=1, base_lr=5e-4,
               timing_sizes=((64, 64),), timing_repeats=1, memory_batches=(8, 16), memory_side=64,
               caffe_time=False)
MONTAGE_IMAGES = 1  # test images per montage: whole photographs as PNG are large, and the report is committed
HALVINGS = 5  # the paper halves the rate every 10 of 50 epochs: five steps over a run, kept at any budget


def machine() -> str:
    """CPU model and core count, as the report states them."""
    from mrfnet.timing import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, CPU-only Caffe"


def prepare_data(work_dir: Path, budget: Budget) -> dict[str, Any]:
    """The embedded LMDBs, built once per work folder."""
    from data_prep.build import BuildOptions, build_dataset

    data = work_dir / "data"
    summary_path = data / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if (summary["patch_size"], summary["copies"]) == (budget.patch_size, budget.copies):
            log.info("reusing the embedded data in %s", data)
            return summary
        log.info("the embedded data in %s was built with other settings: rebuilding it", data)
    return build_dataset(BuildOptions(source="embedded", out=data, patch_size=budget.patch_size,
                                      copies=budget.copies, force=True))


def table1() -> dict[str, Any]:
    """Parameters and multiply-adds of each variant's deploy net at Table I's sizes (256x256, 1280x720)."""
    from netgen import report as netgen_report
    from netgen.cli import size_label

    results = {}
    for variant in VARIANTS:
        totals = netgen_report.totals(netgen_report.variant_tables(variant))
        results[variant] = {"params": totals.params,
                            "macs": {size_label(h, w): macs
                                     for (h, w), macs in zip(netgen_report.SIZES, totals.macs, strict=True)}}
    return results


def run_plan(budget: Budget) -> dict[str, dict[str, Any]]:
    """Run name -> (variant, loss schedule): the four variants, and MRFNet with a single full-resolution L2."""
    plan = {variant: {"variant": variant, "loss_schedule": "coarse-to-fine"} for variant in VARIANTS}
    plan[report.SINGLE_L2_RUN] = {"variant": "mrfnet", "loss_schedule": "full-only"}
    return plan


def train_run(work_dir: Path, name: str, spec: dict[str, Any], budget: Budget, records: int) -> Path:
    """Train one run to the budget: reuse it when finished, resume it when interrupted."""
    run_dir = work_dir / "runs" / name
    final = run_dir / SNAPSHOT_DIR / f"{spec['variant']}_iter_{budget.iterations}.caffemodel"
    if final.is_file():
        log.info("%s: already trained (%s)", name, final)
        return final
    epochs = budget.iterations * budget.batch_size / records
    if run_dir.exists():
        log.info("%s: resuming from %s", name, latest_solverstate(run_dir) or "the start")
        result = train(run_dir, resume=True)
    else:
        options = TrainOptions(variant=spec["variant"], data=str(work_dir / "data"), run_dir=str(run_dir),
                               batch_size=budget.batch_size, crop_size=budget.crop_size, epochs=epochs,
                               iterations=budget.iterations, base_lr=budget.base_lr,
                               halve_every_epochs=epochs / HALVINGS, snapshot_every=budget.iterations,
                               loss_schedule=spec["loss_schedule"])
        result = train(prepare_run(options, ["mrfnet", "reproduce"]))
    if result.status != "finished" or result.snapshot != final:
        raise RuntimeError(f"{name} stopped at iteration {result.iteration}: run `mrfnet reproduce` again to resume")
    return final


def reproduce(name: str, work_dir: Path, report_root: Path, budget: Budget, command: str) -> Path:
    """Every stage, then the report; returns the report folder."""
    from mrfnet.score import score_model
    from mrfnet.timing import time_variants

    began = time.monotonic()
    seconds: dict[str, float] = {}

    def stage(label: str, started: float) -> None:
        seconds[label] = round(time.monotonic() - started, 1)
        log.info("stage %s done in %.1f s", label, seconds[label])

    report_dir = report_root / name
    (report_dir / report.CURVES).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    data = prepare_data(work_dir, budget)
    stage("data", started)
    started = time.monotonic()
    sizes = table1()
    stage("table1", started)

    started = time.monotonic()
    models = {}
    for run_name, spec in run_plan(budget).items():
        models[run_name] = train_run(work_dir, run_name, spec, budget, data["splits"]["train"]["records"])
        shutil.copyfile(work_dir / "runs" / run_name / "progress.csv", report_dir / report.CURVES / f"{run_name}.csv")
    stage("train", started)

    started = time.monotonic()
    scores: dict[str, dict[str, Any]] = {split: {} for split in report.SCORED_SPLITS}
    montages = []
    for run_name, caffemodel in models.items():
        for split in report.SCORED_SPLITS:
            result = score_model(caffemodel.parents[1] / "deploy.prototxt", caffemodel,
                                 test_lmdb=work_dir / "data" / f"{split}_lmdb",
                                 out_dir=work_dir / "scores" / split / run_name, montage=split == "test",
                                 montage_limit=MONTAGE_IMAGES)
            scores[split].setdefault("blurry", result.baseline)
            scores[split][run_name] = result.mean
            if result.montage is not None:
                target = f"montage_{run_name}.png"
                shutil.copyfile(result.montage, report_dir / target)
                montages.append(target)
    stage("score", started)

    started = time.monotonic()
    timing, memory, timing_note, memory_note = time_variants(
        VARIANTS, sizes=budget.timing_sizes, repeats=budget.timing_repeats, memory_batches=budget.memory_batches,
        memory_side=budget.memory_side, caffe_time=budget.caffe_time)
    stage("time", started)

    seconds["total"] = round(time.monotonic() - began, 1)
    results = {
        "name": name, "command": command, "date": datetime.date.today().isoformat(), "machine": machine(),
        "settings": {**asdict(budget), "loss_schedule": "coarse-to-fine"},
        "data": {split: info["records"] for split, info in data["splits"].items()},
        "table1": sizes, "scores": scores["test"], "scores_val": scores["val"], "timing": timing,
        "timing_note": timing_note, "memory": memory,
        "memory_note": memory_note, "montages": montages, "seconds": seconds,
        "metric": "skimage SSIM (Gaussian, sigma 1.5), PSNR on RGB 0..255, no border crop",
    }
    (report_dir / report.RESULTS).write_text(json.dumps(results, indent=2) + "\n")
    report.write_report(report_dir)
    for line in report.summary_lines(report_dir):
        log.info("%s", line)
    log.info("report: %s (%.0f s in all)", report_dir / report.REPORT, seconds["total"])
    return report_dir


def run(args: argparse.Namespace) -> int:
    budget = QUICK if args.quick else FULL
    name = args.name or ("quick" if args.quick else "embedded-cpu")
    work_dir = args.work_dir or Path("runs") / f"reproduce-{name}"
    reproduce(name, work_dir, args.reports, budget, shlex.join(["mrfnet", *sys.argv[1:]]))
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reproduce", help="the main job: data, four variants, scores, timing, report",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"a few-minute version ({QUICK.iterations} iterations per run, tiny crops)")
    parser.add_argument("--name", help="report name (default: embedded-cpu, or quick with --quick)")
    parser.add_argument("--reports", type=Path, default=Path("reports"),
                        help="folder of report folders (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path,
                        help="data and run folders (default: runs/reproduce-<name>); reused on a second call")
    parser.set_defaults(run=run)
