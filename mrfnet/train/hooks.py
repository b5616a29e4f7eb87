"""The hooks of a training run (mrfnet.train.loop), in the order the loop calls them.

Each takes what it touches of the net as functions (netgen's by default), so a test can drive it with a
fake solver. Under MPI every rank runs every hook; only rank 0 (``loop.leader``) validates, reports and
writes, and the hooks that decide for all (stop, non-finite, room for a snapshot) agree over
``loop.group`` at the same point on every rank.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mrfnet.train.loop import Hook
from mrfnet.train.loss_schedule import weights_at
from mrfnet.train.snapshots import snapshot_shortfall
from mrfnet.train.validation import is_better

# each makes the solver snapshot and stop (`mrfnet train` exits 130); SIGUSR1 is a cluster's early warning
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Remembers a stop signal instead of dying of it (installed in the solver process)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for signum in STOP_SIGNALS:  # also when one reaches the solver itself (a cluster signalling every process)
            signal.signal(signum, self._set)

    def _set(self, signum: int, _frame: Any) -> None:
        self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None


class Room:
    """Whether rank 0's disk has room for a snapshot (``needed`` bytes); once it had not, it never has again."""

    def __init__(self, needed: int) -> None:
        self.needed = needed
        self.refused: str | None = None  # the sentence saying why (rank 0)

    def check(self, folder: Path) -> bool:
        if self.refused is None:
            self.refused = snapshot_shortfall(folder, self.needed)
        return self.refused is None


class StopHook(Hook):
    """Before each step: every rank stops when any was signalled, or when rank 0 found the disk full."""

    def __init__(self, stop: StopRequest, room: Room) -> None:
        self.stop, self.room = stop, room

    def before_step(self) -> None:
        stopping, full = self.loop.group.any(self.stop.requested, self.room.refused is not None)
        if full:
            self.loop.end("diskfull", message=self.room.refused or "rank 0 found no room for a snapshot")
        elif stopping:
            self.loop.end("stopped", signal=self.stop.signal)


class LossScheduleHook(Hook):
    """The per-scale loss weights of the schedule's phase, set when the phase changes."""

    def __init__(self, schedule: list[tuple[int, list[float]]], apply: Callable[[list[float]], None]) -> None:
        self.schedule, self.apply = schedule, apply
        self.weights: list[float] | None = None

    def before_step(self) -> None:
        wanted = weights_at(self.schedule, self.loop.iter)
        if wanted != self.weights:
            self.apply(wanted)
            self.weights = wanted
        self.loop.step["weights"] = self.weights


class EdgeHook(Hook):
    """The edge branch: its input switches from the blurred to the refined image at ``alpha_from``, and its
    discriminators take their alternating step after each solver step (nothing without --edge)."""

    def __init__(self, alpha_from: int, set_alpha: Callable[[float], None],
                 train_discriminators: Callable[[], Any]) -> None:
        self.alpha_from, self.set_alpha, self.train_discriminators = alpha_from, set_alpha, train_discriminators
        self.alpha: float | None = None

    def before_step(self) -> None:
        alpha = 1.0 if self.loop.iter >= self.alpha_from else 0.0
        if alpha != self.alpha:
            self.set_alpha(alpha)
            self.alpha = alpha

    def after_step(self) -> None:
        self.train_discriminators()


class LossesHook(Hook):
    """This step's losses (``loop.step["losses"]``) and whether all are finite."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self.read = read

    def after_step(self) -> None:
        losses = self.read()
        self.loop.step["losses"] = losses
        self.loop.step["finite"] = all(math.isfinite(v) for v in losses.values())


class ValidationHook(Hook):
    """Rank 0 scores the weights every ``every`` iterations and at the end, keeping the best ones.

    A stop signal cuts a validation short (mpirun kills a second after its SIGTERM): that row goes
    without scores, and the resume scores the restored weights first (``first``) to fill them in.
    """

    def __init__(self, validator: Any, every: int, best_path: Path, best_psnr: float | None, stop: StopRequest,
                 room: Room, save: Callable[[Path], None], *, first: bool = False,
                 send: Callable[[tuple[str, dict[str, Any]]], None] | None = None) -> None:
        self.validator, self.every, self.best_path, self.best_psnr = validator, every, best_path, best_psnr
        self.stop, self.room, self.save, self.first, self.send = stop, room, save, first, send

    def before_train(self) -> None:
        if self.first and self.loop.leader and (val := self._validate()) is not None and self.send is not None:
            self.send(("validation", {"iteration": self.loop.iter, "val": val}))

    def after_step(self) -> None:
        due = self.loop.iter % self.every == 0 or self.loop.iter == self.loop.max_iter
        if due and self.loop.leader and self.loop.step.get("finite", True):
            self.loop.step["val"] = self._validate()

    def _validate(self) -> dict[str, Any] | None:
        score = self.validator.score(stop=lambda: self.stop.requested)
        if score is None:
            return None
        val = {**score.columns(), "blur_psnr": score.blur_psnr, "blur_ssim": score.blur_ssim,
               "images": score.images, "best": is_better(score.psnr, self.best_psnr)}
        if val["best"]:
            if not self.room.check(self.best_path.parent):
                return None
            self.best_psnr = score.psnr
            self.save(self.best_path)
        return val


class ProgressHook(Hook):
    """Rank 0 sends each finite step's row (losses, weights, rate, validation) to the parent, before the
    ranks meet and before that step's snapshot: a snapshot never exists without its row.

    ``learning_rate`` is read before the step (Caffe's ``GetLearningRate``, pycaffe's ``solver.lr``),
    which is the rate that step uses, whatever the solver's lr policy.
    """

    def __init__(self, send: Callable[[tuple[str, dict[str, Any]]], None],
                 learning_rate: Callable[[], float]) -> None:
        self.send, self.learning_rate = send, learning_rate
        self.rate = 0.0

    def before_step(self) -> None:
        self.rate = self.learning_rate()

    def after_step(self) -> None:
        step = self.loop.step
        if not (self.loop.leader and step.get("finite", True)):
            return
        info = {"iteration": self.loop.iter, "losses": step.get("losses", {}), "weights": step.get("weights"),
                "lr": self.rate}
        if step.get("val") is not None:
            info["val"] = step["val"]
        self.send(("progress", info))


class NonFiniteHook(Hook):
    """Every rank stops when any rank's loss is not finite; no snapshot follows (the weights are poisoned)."""

    def after_step(self) -> None:
        if self.loop.group.any(not self.loop.step.get("finite", True))[0]:
            bad = next(losses for losses in self.loop.group.allgather(self.loop.step.get("losses", {}))
                       if not all(math.isfinite(v) for v in losses.values()))
            self.loop.end("nonfinite", losses=bad)


class SnapshotHook(Hook):
    """A snapshot every ``every`` iterations (0: none) and at the end or a stop, if rank 0 has room.

    Every rank calls it at the same iteration and none goes on before rank 0's snapshot is whole (an
    MPI job ends when any rank exits); a refusal for want of room ends the run on every rank.
    """

    def __init__(self, folder: Path, every: int, room: Room, snapshot: Callable[[], None]) -> None:
        self.folder, self.every, self.room, self.snapshot = folder, every, room, snapshot
        self.taken_at: int | None = None

    def before_train(self) -> None:
        self.taken_at = self.loop.iter  # the restored snapshot counts

    def after_step(self) -> None:
        if self.every and self.loop.iter % self.every == 0:
            self._take()

    def after_train(self) -> None:
        if self.loop.outcome.kind in ("finished", "stopped") and self.taken_at != self.loop.iter:
            self._take()

    def _take(self) -> None:
        if self.loop.leader and self.room.check(self.folder):
            self.snapshot()
        refused = self.loop.group.any(self.room.refused is not None)[0]
        self.loop.group.barrier()
        if refused:
            self.loop.outcome = None  # a stop or the end turns into the full disk that prevented its snapshot
            self.loop.end("diskfull", message=self.room.refused or "rank 0 found no room for a snapshot")
        else:
            self.taken_at = self.loop.iter
