"""Scoring a model, or every snapshot of a run, on a test set: per-image PSNR/SSIM, montages, summary."""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data_prep.atomic import write_json_atomic
from data_prep.images import write_png
from data_prep.option_fields import option, positive_int
from mrfnet.evaluate import montage as montage_module
from mrfnet.evaluate.metrics import MetricOptions, psnr, ssim
from mrfnet.evaluate.score_files import (
    SUMMARY,
    ImageScore,
    plot_iterations,
    write_image_csv,
    write_iteration_csv,
)
from mrfnet.evaluate.testsets import TestSet
from mrfnet.export.engines import choose_engine, open_engine
from mrfnet.export.options import InferenceOptions
from mrfnet.infer.model import resolve_tile
from mrfnet.infer.model_source import ModelSource, resolve_model
from mrfnet.infer.tiling import AutoTile, Tile
from mrfnet.infer.weights import WeightsMismatch
from mrfnet.runtime.errors import InvalidValue, MissingInput
from mrfnet.runtime.run_files import iteration_of

log = logging.getLogger(__name__)


DEFAULT_MONTAGE_LIMIT = 16
# Argument groups of `mrfnet score --help` that ScoreOptions' flags join.
TEST_SET = "test set (an LMDB or two folders)"
OUTPUT = "output"


CONTACT_SHEET = "contact_sheet.png"


@dataclass
class ModelScore:
    """One caffemodel on the test set: per-image rows and their means."""

    caffemodel: str
    iteration: int | None
    parameters: int
    images: list[ImageScore] = field(repr=False)
    psnr: float = math.nan
    ssim: float = math.nan
    seconds: float = 0.0
    out_dir: str | None = None

    def __post_init__(self) -> None:
        if self.images:
            self.psnr = float(np.mean([row.psnr for row in self.images]))
            self.ssim = float(np.mean([row.ssim for row in self.images]))
            self.seconds = float(sum(row.seconds for row in self.images))


@dataclass
class ScoreReport:
    """What `mrfnet score` found: every scored snapshot, the blurry baseline, and how it was measured."""

    label: str
    kind: str  # "model" or "run"
    variant: str | None
    deploy: str
    test_set: dict[str, Any]
    metrics: dict[str, Any]
    tiling: dict[str, Any]
    baseline: dict[str, float]
    results: list[ModelScore]
    created: str = field(default_factory=lambda: datetime.datetime.now().isoformat(timespec="seconds"))
    skipped: list[dict[str, str]] = field(default_factory=list)  # snapshots of a run that could not be scored
    engine: str = "caffe"  # what ran the net: Caffe, or ONNX Runtime on the exported graph

    @property
    def last(self) -> ModelScore:
        return self.results[-1]

    @property
    def best(self) -> ModelScore:
        return max(self.results, key=lambda result: result.psnr)

    @property
    def mean(self) -> dict[str, float]:
        """PSNR and SSIM of the last (or only) snapshot."""
        return {"psnr": self.last.psnr, "ssim": self.last.ssim}

    @property
    def montage(self) -> Path | None:
        """The contact sheet of the last snapshot, if montages were made."""
        if self.last.out_dir is None:
            return None
        sheet = Path(self.last.out_dir) / CONTACT_SHEET
        return sheet if sheet.is_file() else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for result in data["results"]:
            result.pop("images")
        return data


def _rgb(bgr: np.ndarray) -> np.ndarray:
    return bgr[..., ::-1]


def safe_name(name: str) -> Path:
    """A test-set name as a relative file path (folders kept; '..' and absolute parts refused)."""
    path = Path(name)
    if path.is_absolute() or ".." in path.parts:
        raise InvalidValue(f"image name {name!r} cannot be used as a file name")
    return path


def _montage_indices(count: int, limit: int) -> set[int]:
    if limit <= 0 or count == 0:
        return set()
    return {int(round(i)) for i in np.linspace(0, count - 1, num=min(limit, count))}


class _Scorer:
    """Scores snapshots of one deploy net on one test set; caches the blurry baseline between snapshots."""

    def __init__(self, source: ModelSource, test_set: TestSet, *, metrics: MetricOptions, tile: int | str,
                 overlap: int, max_memory_gb: float, limit: int | None, gpu: int | None, engine: str | None) -> None:
        self.source, self.test_set, self.metrics = source, test_set, metrics
        self.overlap, self.limit = overlap, limit
        self.engine = choose_engine(engine, source, gpu=gpu)
        self.model = open_engine(self.engine, source, gpu=gpu)
        self.tile = resolve_tile(self.model, tile, overlap, max_memory_gb)
        self.baseline: dict[str, tuple[float, float]] = {}
        self.fingerprint = hashlib.sha1()
        self.count = 0

    def score(self, iteration: int | None, weights: Path, out_dir: Path | None, *, save_images: bool,
              montage: bool, montage_limit: int) -> ModelScore:
        self.model.load_weights(weights)
        total = len(self.test_set) if self.limit is None else min(self.limit, len(self.test_set))
        if total < 1:
            raise InvalidValue(f"nothing to score: the limit is {self.limit}")
        chosen = _montage_indices(total, montage_limit) if montage else set()
        montages: list[tuple[str, np.ndarray]] = []
        rows = []
        first_pass = not self.baseline
        label = f"iter {iteration}" if iteration is not None else weights.name
        bar = tqdm(self.test_set, total=total, desc=f"score {label}", unit="image")
        for index, (name, blur, sharp) in enumerate(bar):
            if index >= total:
                break
            start = time.perf_counter()
            output = self.model.deblur(blur, tile=self.tile, overlap=self.overlap)
            seconds = time.perf_counter() - start
            out_rgb, sharp_rgb = _rgb(output), _rgb(sharp)
            if name not in self.baseline:
                blur_rgb = _rgb(blur)
                self.baseline[name] = (psnr(sharp_rgb, blur_rgb, self.metrics), ssim(sharp_rgb, blur_rgb, self.metrics))
            if first_pass:
                for chunk in (name.encode(), np.asarray(blur.shape, np.int64).tobytes(), blur.tobytes(),
                              sharp.tobytes()):
                    self.fingerprint.update(chunk)
            blur_psnr, blur_ssim = self.baseline[name]
            row = ImageScore(name, blur.shape[0], blur.shape[1], psnr(sharp_rgb, out_rgb, self.metrics),
                             ssim(sharp_rgb, out_rgb, self.metrics), blur_psnr, blur_ssim, seconds)
            rows.append(row)
            bar.set_postfix(psnr=f"{row.psnr:.2f}")
            if out_dir is not None and save_images:
                write_png(out_dir / "images" / safe_name(name).with_suffix(".png"), output)
            if out_dir is not None and index in chosen:
                image = montage_module.make_montage(blur, output, sharp, psnr_blur=blur_psnr, psnr_output=row.psnr)
                write_png(out_dir / "montages" / safe_name(name).with_suffix(".png"), image)
                montages.append((name, image))
        bar.close()
        if first_pass:
            self.count = len(rows)
        result = ModelScore(str(weights), iteration, self.model.parameters, rows,
                            out_dir=str(out_dir) if out_dir else None)
        if out_dir is not None:
            write_image_csv(rows, out_dir / "images.csv")
            if montages:
                write_png(out_dir / CONTACT_SHEET, montage_module.contact_sheet(montages))
        log.info("%s: PSNR %.3f dB, SSIM %.4f over %d images (blurry input: %.3f dB, %.4f)", label, result.psnr,
                 result.ssim, len(rows), *self.baseline_means())
        return result

    def baseline_means(self) -> tuple[float, float]:
        values = list(self.baseline.values())
        return float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values]))

    def test_set_info(self) -> dict[str, Any]:
        return {"name": self.test_set.name, "source": self.test_set.source, "images": self.count,
                "fingerprint": self.fingerprint.hexdigest()}


def tiling_info(tile: Tile, overlap: int) -> dict[str, Any]:
    """How images were cut, for summary.json."""
    if isinstance(tile, AutoTile):
        return {"tile": "auto", "max_pixels": tile.max_pixels, "overlap": overlap}
    return {"tile": tile, "overlap": overlap}


@dataclass(frozen=True)
class ScoreOptions(InferenceOptions):
    """How a model is scored, beside what and where: the tiling and its memory budget, the device and engine
    (InferenceOptions), the metrics, what is saved (outputs, montages), a limit on the images and, of a run,
    which snapshots. One object for `mrfnet score` (each field but the metrics, which are MetricOptions', is
    one of its flags), the main job and the tests alike."""

    metrics: MetricOptions = field(default_factory=MetricOptions)
    save_images: bool = option(False, "write each output as PNG (last snapshot)", group=OUTPUT)
    montage: bool = option(False, "blur | output | sharp montages with a zoomed crop, and a contact sheet "
                                  "(last snapshot)", group=OUTPUT)
    montage_limit: int = option(DEFAULT_MONTAGE_LIMIT, "montage this many images, spread evenly over the test set",
                                parse=positive_int, group=OUTPUT)
    limit: int | None = option(None, "score only the first N images", parse=positive_int, group=TEST_SET)
    last_only: bool = option(False, "score only the latest snapshot of a run", group=OUTPUT)


def _score(source: ModelSource, test_set: TestSet, *, kind: str, out_dir: str | Path | None, label: str | None,
           options: ScoreOptions) -> ScoreReport:
    out = Path(out_dir) if out_dir is not None else None
    scorer = _Scorer(source, test_set, metrics=options.metrics, tile=options.tile, overlap=options.overlap,
                     max_memory_gb=options.max_memory_gb, limit=options.limit, gpu=options.gpu, engine=options.engine)
    results, skipped = [], []
    for position, (iteration, weights) in enumerate(source.snapshots):
        last = position == len(source.snapshots) - 1
        folder = out if out is None or kind == "model" else out / f"iter_{iteration}"
        try:
            results.append(scorer.score(iteration, weights, folder, save_images=options.save_images and last,
                                        montage=options.montage and last, montage_limit=options.montage_limit))
        except WeightsMismatch as exc:  # unreadable, of another net, or diverged: score the others of a run
            if kind == "model":
                raise
            log.warning("skipping snapshot %s: %s", weights, exc)
            skipped.append({"caffemodel": str(weights), "reason": str(exc)})
    if not results:
        raise InvalidValue(f"none of the {len(skipped)} snapshots of {source.run_dir} could be scored (each is named "
                           "above with why)")
    blur_psnr, blur_ssim = scorer.baseline_means()
    default_label = (source.run_dir.name if source.run_dir else Path(source.snapshots[0][1]).stem)
    report = ScoreReport(label=label or default_label, kind=kind, variant=source.variant, deploy=str(source.deploy),
                         test_set=scorer.test_set_info(), metrics=asdict(options.metrics),
                         tiling=tiling_info(scorer.tile, options.overlap),
                         baseline={"psnr": blur_psnr, "ssim": blur_ssim}, results=results, skipped=skipped,
                         engine=scorer.engine)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / SUMMARY, report.to_json())
        if kind == "run":
            write_iteration_csv(report, out / "score.csv")
            plot_iterations(report, out / "score.png")
    return report


def score_model(deploy: str | Path, weights: str | Path, test_set: TestSet, *, out_dir: str | Path | None = None,
                label: str | None = None, variant: str | None = None,
                options: ScoreOptions | None = None) -> ScoreReport:
    """Score one caffemodel with ``deploy`` (or an exported .onnx file as both) on ``test_set``
    (mrfnet.evaluate.testsets.open_test_set); writes images.csv and summary.json to ``out_dir``."""
    source = ModelSource(Path(deploy), [(iteration_of(Path(weights)), Path(weights))], variant)
    return _score(source, test_set, kind="model", out_dir=out_dir, label=label, options=options or ScoreOptions())


def score_run(run_dir: str | Path, test_set: TestSet, *, out_dir: str | Path | None = None,
              deploy: str | Path | None = None, variant: str | None = None, label: str | None = None,
              options: ScoreOptions | None = None) -> ScoreReport:
    """Score every snapshot of a run folder in iteration order, or its latest with ``options.last_only``
    (``out_dir`` defaults to RUN/score)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingInput(f"run folder {run_dir} does not exist")
    options = options or ScoreOptions()
    out = Path(out_dir) if out_dir is not None else run_dir / "score"
    source = resolve_model(run_dir, deploy=deploy, variant=variant, work_dir=out, last_only=options.last_only)
    return _score(source, test_set, kind="run", out_dir=out, label=label, options=options)
