"""The training loop: hooks before and after each ``solver.step(1)``, as detectron2's ``TrainerBase`` with
``HookBase`` (and Caffe's own ``solver.add_callback``, which gives only the inside of a step).

Each concern of a run (the loss-weight schedule, the edge branch, validation, progress, the non-finite
guard, snapshots, stop signals) is one :class:`Hook`; the loop itself only steps and calls them in
order, so a hook can be tested with a fake solver and no Caffe. A hook ends the run with
:meth:`TrainLoop.end`; the hooks after it in that phase are skipped (a non-finite step is not
snapshotted), and ``after_train`` still runs for every hook, which reads ``loop.outcome``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class Group(Protocol):
    """The other solvers of an MPI run (mrfnet.train.rank_agent.MpiGroup)."""

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag or-ed over the ranks (every rank calls it at the same point)."""

    def allgather(self, value: Any) -> list[Any]: ...

    def barrier(self) -> None: ...


class Alone:
    """The Group of a solver that has none (one process, or one host's GPUs joined by NCCL alone)."""

    def any(self, *flags: bool) -> tuple[bool, ...]:
        return flags

    def allgather(self, value: Any) -> list[Any]:
        return [value]

    def barrier(self) -> None:
        pass


@dataclass
class Outcome:
    """How a run ended: "finished", "stopped" (a signal), "nonfinite" or "diskfull"; what the parent is told."""

    kind: str
    info: dict[str, Any] = field(default_factory=dict)


class Hook:
    """One concern of the loop; every method is optional. ``self.loop`` is set when the loop takes the hook."""

    loop: TrainLoop

    def before_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        pass


class TrainLoop:
    """Steps ``solver`` to ``max_iter`` or until a hook ends the run; ``leader``: rank 0, which writes."""

    def __init__(self, solver: Any, hooks: list[Hook], max_iter: int, *, group: Group | None = None,
                 leader: bool = True) -> None:
        self.solver, self.max_iter, self.leader = solver, max_iter, leader
        self.group = group or Alone()
        self.hooks = hooks
        for hook in hooks:
            hook.loop = self
        self.outcome: Outcome | None = None
        self.step: dict[str, Any] = {}  # what this step's hooks found (losses, finite, val), for the hooks after

    @property
    def iter(self) -> int:
        return self.solver.iter

    def end(self, kind: str, **info: Any) -> None:
        """End the run after the current phase (the first hook to end it names the outcome)."""
        if self.outcome is None:
            self.outcome = Outcome(kind, {"iteration": self.iter, **info})

    def _call(self, phase: str) -> None:
        for hook in self.hooks:
            if self.outcome is not None and phase != "after_train":
                return
            getattr(hook, phase)()

    def run(self) -> Outcome:
        self._call("before_train")
        while self.outcome is None and self.iter < self.max_iter:
            self.step = {}
            self._call("before_step")
            if self.outcome is not None:
                break
            self.solver.step(1)
            self._call("after_step")
        if self.outcome is None:
            self.outcome = Outcome("finished", {"iteration": self.iter})
        self._call("after_train")
        return self.outcome
