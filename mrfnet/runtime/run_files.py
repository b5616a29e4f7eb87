"""A training run folder's layout, in one place: the names of its files and its snapshots, listed by iteration.

Training writes run folders (mrfnet.train); scoring, deblurring and export read them (mrfnet.infer,
mrfnet.evaluate, mrfnet.export), so the layout sits below all of them. Which weights and deploy net a
command uses (a run folder or a caffemodel) is mrfnet.infer.model_source's.
"""

from __future__ import annotations

import re
from pathlib import Path

SNAPSHOT_DIR = "snapshots"  # <prefix>_iter_<N>.caffemodel / .solverstate pairs, and BEST_MODEL
BEST_MODEL = "best.caffemodel"  # in SNAPSHOT_DIR: the weights of the best val_psnr so far
BEST_RECORD = "best.json"  # in the run folder: the iteration and scores of those weights
OPTIONS = "options.json"  # the TrainOptions the run was made with
TRAIN_VAL, DEPLOY, SOLVER = "train_val.prototxt", "deploy.prototxt", "solver.prototxt"  # paths relative to the folder
CAFFE_LOG = "caffe.log"  # the solver children's glog output
PROGRESS = "progress.csv"  # one row per iteration: losses, learning rate, validation scores
SNAPSHOT = re.compile(r"_iter_(\d+)\.(?:caffemodel|solverstate)$")


def iteration_of(path: Path) -> int | None:
    """The iteration in a snapshot's name (``<prefix>_iter_<N>.caffemodel`` or ``.solverstate``), else None."""
    match = SNAPSHOT.search(path.name)
    return int(match.group(1)) if match else None


def _snapshots_in(folder: Path, suffix: str) -> list[tuple[int, Path]]:
    """(iteration, file) of the snapshot files with ``suffix`` in ``folder``, oldest first (by number, not name)."""
    found = ((iteration_of(path), path) for path in folder.glob(f"*_iter_*{suffix}")) if folder.is_dir() else ()
    return sorted(((it, path) for it, path in found if it is not None), key=lambda pair: pair[0])


def snapshot_files(run_dir: Path, suffix: str) -> list[Path]:
    """The run's snapshot files with ``suffix`` (.caffemodel, .solverstate), newest first."""
    return [path for _, path in reversed(_snapshots_in(run_dir / SNAPSHOT_DIR, suffix))]


def run_snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    """Every ``*_iter_N.caffemodel`` of a run (in snapshots/ or the folder itself), by iteration number."""
    found = _snapshots_in(run_dir / SNAPSHOT_DIR, ".caffemodel") + _snapshots_in(run_dir, ".caffemodel")
    return sorted(found, key=lambda pair: pair[0])
