"""Which solverstate a resume starts from: the newest pair that parses, fits the net and is finite."""

from __future__ import annotations

import logging
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from data_prep.atomic import FREE_SPACE_MARGIN, format_bytes, free_bytes
from mrfnet.infer.weights import check_weights, inspect_deploy, nonfinite_values, read_caffemodel
from mrfnet.runtime.run_files import DEPLOY, SNAPSHOT_DIR, iteration_of, snapshot_files

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training stopped on a non-finite loss or a failed child process."""


def learned_net(state_path: Path, learned_net: str) -> Path:
    """The caffemodel a solverstate names, looked for beside the solverstate only.

    Caffe writes the path it saved the caffemodel at, absolute: a copied or moved run folder would
    otherwise follow it back to the original folder's caffemodel, and resume from its weights.
    """
    return state_path.parent / PurePath(learned_net).name


def snapshot_bytes(net: Any) -> int:
    """What one snapshot pair of ``net`` takes on disk: the caffemodel's float32 parameters and a
    solverstate holding up to two more copies of them (Adam's moments), plus the protobuf framing."""
    parameters = sum(blob.count for blobs in net.params.values() for blob in blobs)
    return 3 * 4 * parameters + 2**20


def snapshot_shortfall(folder: Path, needed: int) -> str | None:
    """Why ``needed`` bytes (``snapshot_bytes``) do not fit in ``folder``'s file system now (None when they do).

    Checked before each snapshot, so that a full disk stops the run with this sentence and the previous
    snapshots as they were, rather than with Caffe's abort on a write it could not finish.
    """
    needed += FREE_SPACE_MARGIN
    free = free_bytes(folder)
    if free >= needed:
        return None
    return (f"the disk is full: {format_bytes(free)} free in {folder}, a snapshot needs {format_bytes(needed)} "
            "(with a margin for the logs); make room and resume with --resume")


def _snapshot_problem(state_path: Path, param_shapes: dict[str, list[tuple[int, ...]]]) -> str | None:
    """Why the solverstate and its caffemodel cannot be resumed from (Caffe would abort), or None."""
    from caffe.proto import caffe_pb2

    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(state_path.read_bytes())
    except DecodeError as exc:
        return f"the solverstate cannot be parsed ({exc}): truncated or damaged"
    if not state.history:
        return "the solverstate holds no solver history"
    if any(not np.isfinite(np.asarray(blob.data, dtype=np.float64)).all() for blob in state.history):
        return "the solverstate's history holds non-finite values"
    model = learned_net(state_path, state.learned_net)
    if not model.is_file():
        return f"its caffemodel {model} does not exist"
    try:
        check_weights(model, param_shapes, deploy=state_path.parents[1] / DEPLOY)
    except ValueError as exc:
        return str(exc)
    return None


def resumable_solverstate(run_dir: Path, recorded: set[int] | None = None) -> Path | None:
    """The newest solverstate whose pair (solverstate + caffemodel) parses, fits the run's net and is finite,
    and (``recorded``: the iterations progress.csv holds) whose progress row was recorded.

    Newer ones that fail are skipped with a warning naming why: a run resumes from its newest good snapshot
    instead of aborting in Caffe on a damaged one, or leaving a gap in its progress rows.
    """
    states = snapshot_files(run_dir, ".solverstate")
    if not states:
        return None
    param_shapes = inspect_deploy(run_dir / DEPLOY).param_shapes
    for state in states:
        if recorded is not None and iteration_of(state) not in recorded:
            log.warning("skipping snapshot %s: its progress row was never recorded (the run was killed as it was "
                        "written); the iterations after the older one are trained again", state.name)
            continue
        problem = _snapshot_problem(state, param_shapes)
        if problem is None:
            return state
        log.warning("skipping snapshot %s: %s", state.name, problem)
    raise TrainingError(f"no snapshot in {run_dir / SNAPSHOT_DIR} can be resumed from (each is named above with "
                        "why); remove the run folder to train again from the start")


class SnapshotKeeper:
    """Keeps a run's newest ``keep`` good snapshot pairs and deletes the older ones (``--keep-snapshots``).

    A pair is good when both its caffemodel and solverstate exist (Caffe writes each atomically: patch
    0006) and the caffemodel's parameters are all finite; a pair still being written, or a poisoned
    one, never counts, so the pairs a resume can fall back to are always kept. best.caffemodel is not a
    snapshot and is never touched. None keeps everything.
    """

    def __init__(self, run_dir: Path, keep: int | None) -> None:
        self.run_dir, self.keep = run_dir, keep
        self._finite: dict[Path, bool] = {}
        self._seen: int | None = None  # the snapshot folder's mtime when it was last looked through

    def prune(self) -> list[Path]:
        """Delete what is beyond the newest ``keep`` good pairs; the files deleted."""
        if self.keep is None:
            return []
        changed = (self.run_dir / SNAPSHOT_DIR).stat().st_mtime_ns  # a file added, renamed or removed changes it
        if changed == self._seen:  # one stat per progress message (a change within one clock tick waits a snapshot)
            return []
        models = snapshot_files(self.run_dir, ".caffemodel")
        states = {iteration_of(path): path for path in snapshot_files(self.run_dir, ".solverstate")}
        seen = (*models, *states.values())
        good = [model for model in models if iteration_of(model) in states and self._is_finite(model)]
        doomed = []
        if len(good) > self.keep:
            oldest_kept = iteration_of(good[self.keep - 1])
            doomed = [path for path in seen if iteration_of(path) < oldest_kept]
        for path in doomed:
            path.unlink(missing_ok=True)
            self._finite.pop(path, None)
        if doomed:
            log.info("kept the newest %d snapshot pairs; deleted %s", self.keep, ", ".join(p.name for p in doomed))
        self._seen = (self.run_dir / SNAPSHOT_DIR).stat().st_mtime_ns
        return doomed

    def _is_finite(self, model: Path) -> bool:
        if model not in self._finite:
            try:
                self._finite[model] = not nonfinite_values(read_caffemodel(model))
            except (OSError, ValueError):  # unreadable: not a pair to rely on
                self._finite[model] = False
        return self._finite[model]
