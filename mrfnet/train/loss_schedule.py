"""The scale refinement loss's weight groups over a run (the paper's "loss weight scheduling")."""

from __future__ import annotations

from mrfnet.runtime.errors import InvalidValue

LOSS_SCHEDULES = ("coarse-to-fine", "uniform", "full-only")


def loss_schedule(name: str, max_iter: int, scales: int = 4) -> list[tuple[int, list[float]]]:
    """Per-scale loss weights over the run, listed coarsest scale first.

    ``uniform`` is Eq. 5 as written (every scale weighted equally). ``coarse-to-fine`` (default)
    is our reading of the paper's "loss weight scheduling" with "four loss weight groups": the run
    is cut into ``scales`` equal phases and phase p doubles the weight of scale p (coarsest first),
    renormalised so the weights still sum to ``scales``. ``full-only`` trains the full-resolution
    output alone: the single-L2 baseline of Fig. 5. Explicit schedules: "ITER:w1,w2,..;ITER:...".
    """
    if name == "uniform":
        return [(0, [1.0] * scales)]
    if name == "full-only":
        return [(0, [0.0] * (scales - 1) + [float(scales)])]
    if name == "coarse-to-fine":
        schedule = []
        for phase in range(scales):
            raw = [2.0 if k == phase else 1.0 for k in range(scales)]
            schedule.append((phase * max_iter // scales, [w * scales / sum(raw) for w in raw]))
        return schedule
    try:
        schedule = [(int(start), [float(w) for w in weights.split(",")])
                    for start, weights in (part.split(":") for part in name.split(";"))]
    except ValueError as exc:
        raise InvalidValue(f"loss schedule {name!r} is neither one of {LOSS_SCHEDULES} nor ITER:w1,..;ITER:..") from exc
    if schedule[0][0] != 0 or any(len(w) != scales for _, w in schedule):
        raise InvalidValue(f"an explicit loss schedule starts at iteration 0 and gives {scales} weights per step")
    return sorted(schedule)


def weights_at(schedule: list[tuple[int, list[float]]], iteration: int) -> list[float]:
    """The per-scale weights in force at ``iteration``."""
    current = schedule[0][1]
    for start, weights in schedule:
        if iteration >= start:
            current = weights
    return current
