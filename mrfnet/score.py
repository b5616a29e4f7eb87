"""`mrfnet score MODEL`: PSNR/SSIM of a caffemodel, or of every snapshot of a run, on a test set.

MODEL is a run folder of `mrfnet train` (every ``snapshots/*_iter_N.caffemodel``, in iteration
order, with the run's deploy.prototxt) or one .caffemodel (with ``--deploy``, ``--variant``, or
the deploy.prototxt of the run folder it sits in). The test set is an LMDB of data_prep
(``--test-lmdb``, whole images) or two folders of images matched by relative name
(``--blur-dir``, ``--sharp-dir``; a file on one side only is an error naming it).

Outputs are rounded to uint8 before scoring, and saved as PNG. Metrics follow mrfnet.metrics:
by default SSIM is scikit-image's (Gaussian, sigma 1.5), on RGB, no border crop, data range 255.
Written to ``--out``: images.csv (one row per image, with the blurry input's own PSNR/SSIM as the
baseline) and summary.json (means, baseline, metric options, test-set fingerprint); for a run one
folder per iteration plus score.csv and score.png (PSNR/SSIM against iteration). ``--save-images``
and ``--montage`` apply to the last snapshot of a run.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from mrfnet import montage as montage_module
from mrfnet.argtypes import non_negative_int, positive_float, positive_int
from mrfnet.inference import (
    DEFAULT_MAX_MEMORY_GB,
    DEFAULT_OVERLAP,
    AutoTile,
    Model,
    Tile,
    WeightsMismatch,
    resolve_tile,
)
from mrfnet.metrics import SSIM_VARIANTS, MetricOptions, psnr, ssim

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SNAPSHOT = re.compile(r"_iter_(\d+)\.caffemodel$")
GENERIC_LMDB_NAMES = ("test_lmdb", "val_lmdb", "train_lmdb")
DEFAULT_MONTAGE_LIMIT = 16
SUMMARY = "summary.json"
CONTACT_SHEET = "contact_sheet.png"


# ---------------------------------------------------------------- test sets


def read_bgr(path: Path) -> np.ndarray:
    """An image file as H x W x 3 uint8 BGR (grey expanded, alpha dropped, 16-bit scaled); ValueError if unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path} (missing, corrupt or not an image)")
    return image


def image_files(folder: Path) -> dict[str, Path]:
    """Relative path without suffix -> file, for every image under ``folder`` (recursively)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            key = path.relative_to(folder).with_suffix("").as_posix()
            if key in files:
                raise ValueError(f"{files[key]} and {path} have the same name: pairs are matched by name")
            files[key] = path
    return files


class TestSet:
    """Blurred/sharp pairs in a fixed order, with a name for tables and a fingerprint of their content."""

    name: str
    source: str

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        raise NotImplementedError


class LmdbTestSet(TestSet):
    """A data_prep LMDB (raw 6-channel pair Datums), read in key order."""

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        from data_prep.records import count_records

        self.path = Path(path)
        if count_records(self.path) == 0:
            raise ValueError(f"test LMDB {self.path} holds no records")
        self.source = str(self.path.resolve())
        generic = self.path.name in GENERIC_LMDB_NAMES
        self.name = name or (self.path.resolve().parent.name if generic else self.path.name)

    def __len__(self) -> int:
        from data_prep.records import count_records

        return count_records(self.path)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        from data_prep.records import iter_pairs

        yield from iter_pairs(self.path)


class FolderTestSet(TestSet):
    """Two folders of images, paired by relative path without suffix (a.png pairs with a.png or a.jpg)."""

    def __init__(self, blur_dir: str | Path, sharp_dir: str | Path, name: str | None = None) -> None:
        self.blur_dir, self.sharp_dir = Path(blur_dir), Path(sharp_dir)
        blur, sharp = image_files(self.blur_dir), image_files(self.sharp_dir)
        only_blur, only_sharp = sorted(blur.keys() - sharp.keys()), sorted(sharp.keys() - blur.keys())
        if only_blur or only_sharp:
            lines = ["the blur and sharp folders do not pair up by name:"]
            for folder, files, missing in ((self.sharp_dir, blur, only_blur), (self.blur_dir, sharp, only_sharp)):
                if missing:
                    listed = ", ".join(str(files[key]) for key in missing[:5])
                    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                    lines.append(f"no match in {folder} for {listed}{more}")
            raise ValueError("\n".join(lines))
        if not blur:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.blur_dir}")
        self.pairs = [(key, blur[key], sharp[key]) for key in sorted(blur)]
        self.source = f"{self.blur_dir.resolve()} | {self.sharp_dir.resolve()}"
        self.name = name or _common_name(self.blur_dir, self.sharp_dir)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for key, blur_path, sharp_path in self.pairs:
            blur, sharp = read_bgr(blur_path), read_bgr(sharp_path)
            if blur.shape != sharp.shape:
                raise ValueError(f"{blur_path} ({blur.shape[1]}x{blur.shape[0]}) and {sharp_path} "
                                 f"({sharp.shape[1]}x{sharp.shape[0]}) differ in size")
            yield key, blur, sharp


def _common_name(blur_dir: Path, sharp_dir: Path) -> str:
    blur_dir, sharp_dir = blur_dir.resolve(), sharp_dir.resolve()
    return blur_dir.parent.name if blur_dir.parent == sharp_dir.parent else blur_dir.name


def open_test_set(*, test_lmdb: str | Path | None = None, blur_dir: str | Path | None = None,
                  sharp_dir: str | Path | None = None, name: str | None = None) -> TestSet:
    """The test set from an LMDB or from a pair of folders (exactly one of the two)."""
    if test_lmdb is not None and (blur_dir is not None or sharp_dir is not None):
        raise ValueError("give either a test LMDB or --blur-dir/--sharp-dir, not both")
    if test_lmdb is not None:
        return LmdbTestSet(test_lmdb, name)
    if blur_dir is None or sharp_dir is None:
        raise ValueError("a test set needs --test-lmdb, or both --blur-dir and --sharp-dir")
    return FolderTestSet(blur_dir, sharp_dir, name)


# ---------------------------------------------------------------- models


@dataclass
class ModelSource:
    """Where the weights and the deploy definition of a score or deblur run come from."""

    deploy: Path
    snapshots: list[tuple[int | None, Path]]  # (iteration, caffemodel), in iteration order
    variant: str | None = None
    run_dir: Path | None = None


def iteration_of(path: Path) -> int | None:
    match = SNAPSHOT.search(path.name)
    return int(match.group(1)) if match else None


def run_snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    """Every ``*_iter_N.caffemodel`` of a run (in snapshots/ or the folder itself), by iteration number."""
    found = [(iteration_of(p), p) for folder in (run_dir / "snapshots", run_dir) if folder.is_dir()
             for p in folder.glob("*_iter_*.caffemodel")]
    return sorted(((it, p) for it, p in found if it is not None), key=lambda pair: pair[0])


def _run_variant(run_dir: Path) -> str | None:
    options = run_dir / "options.json"
    return json.loads(options.read_text()).get("variant") if options.is_file() else None


def resolve_model(model: str | Path, *, deploy: str | Path | None = None, variant: str | None = None,
                  work_dir: Path | None = None, last_only: bool = False) -> ModelSource:
    """Weights and deploy net for MODEL, a run folder or a caffemodel.

    The deploy net is ``deploy`` if given, else the run folder's deploy.prototxt, else one
    generated by netgen for ``variant`` (or the run's variant) into ``work_dir``.
    """
    model = Path(model)
    if not model.exists():
        raise FileNotFoundError(f"model {model} does not exist (give a run folder or a .caffemodel)")
    if model.is_dir():
        run_dir = model
        snapshots: list[tuple[int | None, Path]] = list(run_snapshots(run_dir))
        if not snapshots:
            raise FileNotFoundError(f"run folder {run_dir} has no *_iter_N.caffemodel snapshots")
        if last_only:
            snapshots = snapshots[-1:]
    else:
        run_dir = model.parent.parent if model.parent.name == "snapshots" else None
        if run_dir is not None and not (run_dir / "options.json").is_file():
            run_dir = None
        snapshots = [(iteration_of(model), model)]
    variant = variant or (_run_variant(run_dir) if run_dir else None)
    if variant is None and not model.is_dir():
        prefix = model.name.split("_iter_")[0]
        from netgen import VARIANTS

        variant = prefix if prefix in VARIANTS else None
    if deploy is None and run_dir is not None and (run_dir / "deploy.prototxt").is_file():
        deploy = run_dir / "deploy.prototxt"
    if deploy is None:
        if variant is None:
            raise ValueError(f"no deploy net for {model}: give --deploy PROTOTXT or --variant NAME")
        if work_dir is None:
            raise ValueError("a generated deploy net needs a folder to be written to")
        deploy = generate_deploy(variant, work_dir)
    return ModelSource(Path(deploy), snapshots, variant, run_dir)


def generate_deploy(variant: str, folder: Path) -> Path:
    """netgen's deploy prototxt of ``variant`` written to ``folder`` (any input size works after a reshape)."""
    from netgen import build_deploy

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{variant}_deploy.prototxt"
    path.write_text(str(build_deploy(variant)))
    return path


# ---------------------------------------------------------------- scoring


@dataclass
class ImageScore:
    name: str
    height: int
    width: int
    psnr: float
    ssim: float
    blur_psnr: float
    blur_ssim: float
    seconds: float


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
        raise ValueError(f"image name {name!r} cannot be used as a file name")
    return path


def _montage_indices(count: int, limit: int) -> set[int]:
    if limit <= 0 or count == 0:
        return set()
    return {int(round(i)) for i in np.linspace(0, count - 1, num=min(limit, count))}


class _Scorer:
    """Scores snapshots of one deploy net on one test set; caches the blurry baseline between snapshots."""

    def __init__(self, source: ModelSource, test_set: TestSet, *, metrics: MetricOptions, tile: int | str,
                 overlap: int, max_memory_gb: float, limit: int | None, gpu: int | None) -> None:
        self.source, self.test_set, self.metrics = source, test_set, metrics
        self.overlap, self.limit = overlap, limit
        self.model = Model(source.deploy, gpu=gpu)
        self.tile = resolve_tile(self.model, tile, overlap, max_memory_gb)
        self.baseline: dict[str, tuple[float, float]] = {}
        self.fingerprint = hashlib.sha1()
        self.count = 0

    def score(self, iteration: int | None, weights: Path, out_dir: Path | None, *, save_images: bool,
              montage: bool, montage_limit: int) -> ModelScore:
        self.model.load_weights(weights)
        total = len(self.test_set) if self.limit is None else min(self.limit, len(self.test_set))
        if total < 1:
            raise ValueError(f"nothing to score: the limit is {self.limit}")
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
                montage_module.write_png(out_dir / "images" / safe_name(name).with_suffix(".png"), output)
            if out_dir is not None and index in chosen:
                image = montage_module.make_montage(blur, output, sharp, psnr_blur=blur_psnr, psnr_output=row.psnr)
                montage_module.write_png(out_dir / "montages" / safe_name(name).with_suffix(".png"), image)
                montages.append((name, image))
        bar.close()
        if first_pass:
            self.count = len(rows)
        result = ModelScore(str(weights), iteration, self.model.parameters, rows,
                            out_dir=str(out_dir) if out_dir else None)
        if out_dir is not None:
            write_image_csv(rows, out_dir / "images.csv")
            if montages:
                montage_module.write_png(out_dir / CONTACT_SHEET, montage_module.contact_sheet(montages))
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


def write_image_csv(rows: Sequence[ImageScore], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(ImageScore.__dataclass_fields__))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: (f"{value:.6f}" if isinstance(value, float) else value)
                             for key, value in asdict(row).items()})


def _score(source: ModelSource, test_set: TestSet, *, kind: str, out_dir: str | Path | None, label: str | None,
           metrics: MetricOptions, save_images: bool, montage: bool, montage_limit: int, tile: int | str,
           overlap: int, max_memory_gb: float, limit: int | None, gpu: int | None) -> ScoreReport:
    out = Path(out_dir) if out_dir is not None else None
    scorer = _Scorer(source, test_set, metrics=metrics, tile=tile, overlap=overlap, max_memory_gb=max_memory_gb,
                     limit=limit, gpu=gpu)
    results, skipped = [], []
    for position, (iteration, weights) in enumerate(source.snapshots):
        last = position == len(source.snapshots) - 1
        folder = out if out is None or kind == "model" else out / f"iter_{iteration}"
        try:
            results.append(scorer.score(iteration, weights, folder, save_images=save_images and last,
                                        montage=montage and last, montage_limit=montage_limit))
        except WeightsMismatch as exc:  # unreadable, of another net, or diverged: score the others of a run
            if kind == "model":
                raise
            log.warning("skipping snapshot %s: %s", weights, exc)
            skipped.append({"caffemodel": str(weights), "reason": str(exc)})
    if not results:
        raise ValueError(f"none of the {len(skipped)} snapshots of {source.run_dir} could be scored (each is named "
                         "above with why)")
    blur_psnr, blur_ssim = scorer.baseline_means()
    default_label = (source.run_dir.name if source.run_dir else Path(source.snapshots[0][1]).stem)
    report = ScoreReport(label=label or default_label, kind=kind, variant=source.variant, deploy=str(source.deploy),
                         test_set=scorer.test_set_info(), metrics=asdict(metrics),
                         tiling=tiling_info(scorer.tile, overlap),
                         baseline={"psnr": blur_psnr, "ssim": blur_ssim}, results=results, skipped=skipped)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / SUMMARY).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        if kind == "run":
            write_iteration_csv(report, out / "score.csv")
            plot_iterations(report, out / "score.png")
    return report


def score_model(deploy: str | Path, weights: str | Path, test_set: TestSet | None = None, *,
                test_lmdb: str | Path | None = None, blur_dir: str | Path | None = None,
                sharp_dir: str | Path | None = None, out_dir: str | Path | None = None, label: str | None = None,
                variant: str | None = None, metrics: MetricOptions | None = None, save_images: bool = False,
                montage: bool = False, montage_limit: int = DEFAULT_MONTAGE_LIMIT, tile: int | str = "auto",
                overlap: int = DEFAULT_OVERLAP, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB,
                limit: int | None = None, gpu: int | None = None) -> ScoreReport:
    """Score one caffemodel with ``deploy`` on a test set; writes images.csv and summary.json to ``out_dir``.

    The test set is ``test_set``, or opened from ``test_lmdb`` or ``blur_dir`` + ``sharp_dir``.
    """
    test_set = test_set or open_test_set(test_lmdb=test_lmdb, blur_dir=blur_dir, sharp_dir=sharp_dir)
    source = ModelSource(Path(deploy), [(iteration_of(Path(weights)), Path(weights))], variant)
    return _score(source, test_set, kind="model", out_dir=out_dir, label=label, metrics=metrics or MetricOptions(),
                  save_images=save_images, montage=montage, montage_limit=montage_limit, tile=tile, overlap=overlap,
                  max_memory_gb=max_memory_gb, limit=limit, gpu=gpu)


def score_run(run_dir: str | Path, test_set: TestSet | None = None, *, test_lmdb: str | Path | None = None,
              blur_dir: str | Path | None = None, sharp_dir: str | Path | None = None,
              out_dir: str | Path | None = None, deploy: str | Path | None = None, label: str | None = None,
              metrics: MetricOptions | None = None,
              save_images: bool = False, montage: bool = False, montage_limit: int = DEFAULT_MONTAGE_LIMIT,
              tile: int | str = "auto", overlap: int = DEFAULT_OVERLAP, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB,
              limit: int | None = None, last_only: bool = False, gpu: int | None = None) -> ScoreReport:
    """Score every snapshot of a run folder in iteration order (``out_dir`` defaults to RUN/score)."""
    test_set = test_set or open_test_set(test_lmdb=test_lmdb, blur_dir=blur_dir, sharp_dir=sharp_dir)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    out = Path(out_dir) if out_dir is not None else run_dir / "score"
    source = resolve_model(run_dir, deploy=deploy, work_dir=out, last_only=last_only)
    return _score(source, test_set, kind="run", out_dir=out, label=label, metrics=metrics or MetricOptions(),
                  save_images=save_images,
                  montage=montage, montage_limit=montage_limit, tile=tile, overlap=overlap,
                  max_memory_gb=max_memory_gb, limit=limit, gpu=gpu)


def write_iteration_csv(report: ScoreReport, path: Path) -> None:
    """score.csv of a run: one row per snapshot, with the blurry baseline repeated for plotting."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["iteration", "psnr", "ssim", "blur_psnr", "blur_ssim", "images", "caffemodel"])
        for result in report.results:
            writer.writerow([result.iteration, f"{result.psnr:.6f}", f"{result.ssim:.6f}",
                             f"{report.baseline['psnr']:.6f}", f"{report.baseline['ssim']:.6f}", len(result.images),
                             result.caffemodel])


def plot_iterations(report: ScoreReport, path: Path) -> None:
    """PSNR and SSIM against iteration, the blurry input's as a dashed line (Agg, fixed style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = [r.iteration if r.iteration is not None else i for i, r in enumerate(report.results)]
    with plt.style.context("default"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
        for axis, metric, unit in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
            axis.plot(iterations, [getattr(r, metric) for r in report.results], marker="o", color="tab:blue",
                      linewidth=1.5, label=report.label)
            axis.axhline(report.baseline[metric], color="gray", linestyle="--", linewidth=1.2, label="blurry input")
            axis.set(xlabel="iteration", ylabel=unit, title=f"{unit} on {report.test_set['name']}")
            axis.grid(True, alpha=0.3)
            axis.legend(fontsize=8)
        fig.suptitle(f"{report.label}: SSIM {report.metrics['ssim']}"
                     f"{', Y channel' if report.metrics['y_channel'] else ', RGB'}"
                     f"{', crop ' + str(report.metrics['crop_border']) if report.metrics['crop_border'] else ''}",
                     fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def load_summary(path: str | Path) -> dict[str, Any]:
    """A summary.json written by `mrfnet score` (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY
    if not path.is_file():
        raise FileNotFoundError(f"no {SUMMARY} at {path} (score a model with `mrfnet score` first)")
    data = json.loads(path.read_text())
    if "results" not in data or "test_set" not in data:
        raise ValueError(f"{path} is not a summary written by `mrfnet score`")
    return data


# ---------------------------------------------------------------- command line


def add_metric_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics (defaults: skimage SSIM, RGB, no border crop, data range 255)")
    group.add_argument("--ssim", choices=SSIM_VARIANTS, default="skimage",
                       help="SSIM variant: skimage (Gaussian, Wang et al.), gaussian2d (BasicSR), matlab3d "
                            "(MATLAB ssim on RGB) (default: %(default)s)")
    group.add_argument("--y-channel", action="store_true", help="score the BT.601 Y channel only (default: RGB)")
    group.add_argument("--crop-border", type=non_negative_int, default=0, help="pixels cut from each side (default: 0)")


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inference")
    group.add_argument("--tile", default="auto",
                       help="tile side in pixels (a multiple of 8), 0 for whole images, or auto: the largest tile "
                            "within --max-memory-gb (default: %(default)s)")
    group.add_argument("--overlap", type=non_negative_int, default=DEFAULT_OVERLAP,
                       help="pixels shared by neighbouring tiles, a multiple of 8 (default: %(default)s)")
    group.add_argument("--max-memory-gb", type=positive_float, default=DEFAULT_MAX_MEMORY_GB,
                       help="Caffe memory budget that sets the auto tile size (default: %(default)s)")
    group.add_argument("--gpu", type=non_negative_int, help="GPU id (needs a CUDA build of Caffe; default: CPU)")


def parse_tile(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--tile takes a number of pixels, 0 or auto, not {text!r}") from None


def run(args: argparse.Namespace) -> int:
    metrics = MetricOptions(ssim=args.ssim, y_channel=args.y_channel, crop_border=args.crop_border)
    test_set = open_test_set(test_lmdb=args.test_lmdb, blur_dir=args.blur_dir, sharp_dir=args.sharp_dir,
                             name=args.test_name)
    model = Path(args.model)
    common = dict(label=args.label, metrics=metrics, save_images=args.save_images, montage=args.montage,
                  montage_limit=args.montage_limit, tile=parse_tile(args.tile), overlap=args.overlap,
                  max_memory_gb=args.max_memory_gb, limit=args.limit, gpu=args.gpu)
    if model.is_dir():
        report = score_run(model, test_set, out_dir=args.out, deploy=args.deploy, last_only=args.last_only, **common)
        out = Path(args.out) if args.out else model / "score"
    else:
        out = Path(args.out) if args.out else model.with_name(f"{model.stem}_score")
        source = resolve_model(model, deploy=args.deploy, variant=args.variant, work_dir=out)
        report = score_model(source.deploy, model, test_set, out_dir=out, variant=source.variant, **common)
    best = report.best
    print(f"{report.label} on {report.test_set['name']} ({report.test_set['images']} images, SSIM {args.ssim}): "
          f"PSNR {report.last.psnr:.3f} dB, SSIM {report.last.ssim:.4f} (blurry input {report.baseline['psnr']:.3f} "
          f"dB, {report.baseline['ssim']:.4f})"
          + (f"; best iteration {best.iteration}: {best.psnr:.3f} dB" if len(report.results) > 1 else ""))
    if report.skipped:
        print(f"{len(report.skipped)} snapshot(s) could not be scored: "
              + ", ".join(Path(entry["caffemodel"]).name for entry in report.skipped) + " (see summary.json)")
    print(f"written to {out}")
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="PSNR/SSIM of a caffemodel or of every snapshot of a run",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="a run folder (every snapshot) or a .caffemodel")
    parser.add_argument("--deploy", type=Path, help="deploy prototxt (default: the run's, or generated for --variant)")
    parser.add_argument("--variant", help="variant whose deploy net netgen generates, for a bare caffemodel")
    data = parser.add_argument_group("test set (an LMDB or two folders)")
    data.add_argument("--test-lmdb", type=Path, help="data_prep LMDB of whole blurred/sharp images")
    data.add_argument("--blur-dir", type=Path, help="folder of blurred images")
    data.add_argument("--sharp-dir", type=Path, help="folder of sharp images, same relative names")
    data.add_argument("--test-name", help="test-set name in tables (default: from the path)")
    data.add_argument("--limit", type=positive_int, help="score only the first N images")
    add_metric_arguments(parser)
    add_inference_arguments(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path,
                        help="output folder (default: RUN/score, or <caffemodel stem>_score beside the caffemodel)")
    output.add_argument("--label", help="name in tables (default: the run folder's or caffemodel's name)")
    output.add_argument("--save-images", action="store_true", help="write each output as PNG (last snapshot)")
    output.add_argument("--montage", action="store_true",
                        help="blur | output | sharp montages with a zoomed crop, and a contact sheet (last snapshot)")
    output.add_argument("--montage-limit", type=positive_int, default=DEFAULT_MONTAGE_LIMIT,
                        help="montage this many images, spread evenly over the test set (default: %(default)s)")
    output.add_argument("--last-only", action="store_true", help="score only the latest snapshot of a run")
    parser.set_defaults(run=run)
