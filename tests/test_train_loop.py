"""The training loop and its hooks with a fake solver (no Caffe): what each hook does, and in which order.

The same hooks run on real Caffe in tests/test_train.py and tests/test_mpi.py; here each concern is
pinned down on its own: rows before snapshots, the non-finite guard, stops, a full disk, validations a
stop cuts short, the loss-weight schedule and the edge branch's switch.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace

from mrfnet.train.hooks import (
    EdgeHook,
    LossesHook,
    LossScheduleHook,
    NonFiniteHook,
    ProgressHook,
    Room,
    SnapshotHook,
    StopHook,
    ValidationHook,
)
from mrfnet.train.loop import TrainLoop


class FakeSolver:
    """Steps and snapshots, writing what happened into ``events``; its loss is ``losses(iteration)``."""

    def __init__(self, events: list, start: int = 0, losses=lambda it: {"loss_r1": 1.0 / (it + 1)}) -> None:
        self.iter, self.events, self.losses = start, events, losses

    def step(self, count: int) -> None:
        self.iter += count
        self.events.append(("step", self.iter))

    def snapshot(self) -> None:
        self.events.append(("snapshot", self.iter))


class FakeStop:
    def __init__(self, at: int | None = None, solver: FakeSolver | None = None) -> None:
        self.at, self.solver, self.signal = at, solver, None

    @property
    def requested(self) -> bool:
        if self.at is not None and self.solver.iter >= self.at:
            self.signal = 15
        return self.signal is not None


class FakeValidator:
    """Scores 20 dB + iteration / 100; a stop requested cuts it short."""

    def __init__(self, solver: FakeSolver) -> None:
        self.solver = solver

    def score(self, stop):
        if stop():
            return None
        psnr = 20 + self.solver.iter / 100
        return SimpleNamespace(psnr=psnr, blur_psnr=20.0, blur_ssim=0.5, images=2,
                               columns=lambda: {"val_psnr": psnr, "val_ssim": 0.6, "val_gain_db": psnr - 20})


def _loop(tmp_path: Path, solver: FakeSolver, *, max_iter: int = 6, snapshot_every: int = 3, stop=None,
          needed: int = 0, validate_every: int | None = None, first: bool = False):
    events = solver.events
    stop = stop or FakeStop()
    room = Room(needed)
    hooks = [StopHook(stop, room), LossesHook(lambda: solver.losses(solver.iter))]
    if validate_every:
        hooks.append(ValidationHook(FakeValidator(solver), validate_every, tmp_path / "best.caffemodel", None, stop,
                                    room, lambda path: events.append(("best", solver.iter)), first=first,
                                    send=events.append))
    hooks += [ProgressHook(events.append, lambda: 1e-4), NonFiniteHook(),
              SnapshotHook(tmp_path, snapshot_every, room, solver.snapshot)]
    return TrainLoop(solver, hooks, max_iter)


def _kinds(events: list) -> list[tuple[str, int]]:
    return [(event[0], event[1]["iteration"]) if isinstance(event[1], dict) else event for event in events]


def test_each_row_goes_out_before_its_snapshot_and_the_end_is_snapshotted(tmp_path):
    events: list = []
    outcome = _loop(tmp_path, FakeSolver(events), max_iter=7).run()
    assert outcome.kind == "finished" and outcome.info["iteration"] == 7
    assert _kinds(events) == [("step", 1), ("progress", 1), ("step", 2), ("progress", 2), ("step", 3),
                              ("progress", 3), ("snapshot", 3), ("step", 4), ("progress", 4), ("step", 5),
                              ("progress", 5), ("step", 6), ("progress", 6), ("snapshot", 6), ("step", 7),
                              ("progress", 7), ("snapshot", 7)]


def test_a_non_finite_loss_ends_the_run_without_its_row_or_a_snapshot(tmp_path):
    events: list = []
    solver = FakeSolver(events, losses=lambda it: {"loss_r1": math.nan if it == 5 else 0.1})
    outcome = _loop(tmp_path, solver).run()
    assert outcome.kind == "nonfinite" and outcome.info["iteration"] == 5
    assert math.isnan(outcome.info["losses"]["loss_r1"])
    assert _kinds(events)[-3:] == [("step", 4), ("progress", 4), ("step", 5)]
    assert ("snapshot", 5) not in events


def test_a_stop_snapshots_where_it_stopped(tmp_path):
    events: list = []
    solver = FakeSolver(events)
    outcome = _loop(tmp_path, solver, max_iter=100, stop=FakeStop(at=4, solver=solver)).run()
    assert outcome.kind == "stopped" and outcome.info["iteration"] == 4 and outcome.info["signal"] == 15
    assert _kinds(events)[-2:] == [("progress", 4), ("snapshot", 4)]


def test_a_full_disk_ends_the_run_at_its_first_snapshot_without_writing(tmp_path):
    events: list = []
    needed = shutil.disk_usage(tmp_path).free + 2**30
    outcome = _loop(tmp_path, FakeSolver(events), needed=needed).run()
    assert outcome.kind == "diskfull" and outcome.info["iteration"] == 3
    assert outcome.info["message"].startswith("the disk is full: ")
    assert not [event for event in events if event[0] == "snapshot"]
    assert _kinds(events)[-1] == ("progress", 3)


def test_validation_rows_the_best_weights_and_a_validation_cut_short(tmp_path):
    events: list = []
    solver = FakeSolver(events)
    outcome = _loop(tmp_path, solver, max_iter=100, validate_every=2, stop=FakeStop(at=4, solver=solver)).run()
    assert outcome.kind == "stopped"
    rows = {event[1]["iteration"]: event[1] for event in events if event[0] == "progress"}
    assert rows[2]["val"]["val_psnr"] == 20.02 and rows[2]["val"]["best"]
    assert "val" not in rows[4], "the stop came during iteration 4's validation: that row goes without it"
    assert ("best", 2) in events and ("best", 4) not in events
    assert _kinds(events)[-1] == ("snapshot", 4)

    resumed: list = []
    solver = FakeSolver(resumed, start=4)
    _loop(tmp_path, solver, max_iter=6, validate_every=2, first=True).run()
    assert resumed[:2] == [("best", 4), ("validation", {
        "iteration": 4, "val": {"val_psnr": 20.04, "val_ssim": 0.6, "val_gain_db": 20.04 - 20, "blur_psnr": 20.0,
                                "blur_ssim": 0.5, "images": 2, "best": True}})], "scored first, before any step"


def test_the_loss_schedule_sets_weights_at_each_phase_change_only(tmp_path):
    applied: list = []
    solver = FakeSolver([])
    hook = LossScheduleHook([(0, [1.0, 0.0]), (3, [0.0, 1.0])], lambda weights: applied.append((solver.iter, weights)))
    TrainLoop(solver, [hook], 6).run()
    assert applied == [(0, [1.0, 0.0]), (3, [0.0, 1.0])]


def test_the_edge_branch_switches_its_input_once_and_trains_its_discriminators_every_step(tmp_path):
    alphas, steps = [], []
    solver = FakeSolver([])
    hook = EdgeHook(2, lambda alpha: alphas.append((solver.iter, alpha)), lambda: steps.append(solver.iter))
    TrainLoop(solver, [hook], 4).run()
    assert alphas == [(0, 0.0), (2, 1.0)] and steps == [1, 2, 3, 4]
