"""Whether a run's val curve has flattened, and when it would (issue 27): a claim compared at a budget where
the curves still climb describes the first minutes of training, not the networks.

A run's curve is its val PSNR gain over the blurry input at each validation (progress.csv). It is *flat* when
the gain rose less than ``flat_db`` over the last quarter of the run. Where it is not, the iterations it would
need are extrapolated from the later half of its validations (at least two) with the model
``gain(t) = a - b / t`` (least squares): the rise over the last quarter of a run of T iterations is then
``b / (3 T)``, under ``flat_db`` from ``T = b / (3 flat_db)`` on. The model is a stated guess, not a law: it
ignores that a longer run would also stretch its learning-rate schedule, so the report gives it as an estimate.
"""

from __future__ import annotations

import math

import numpy as np

LAST_QUARTER = 0.75  # where a run's last quarter starts, as a fraction of its iterations
PAUSE_SECONDS = 300.0  # no step or validation of the main job takes this long: a longer gap is a stop


def val_points(curve: dict[str, list[float]], column: str = "val_psnr") -> tuple[list[float], list[float]]:
    """(iterations, values) of the rows of a curve where validation ran."""
    pairs = [(i, v) for i, v in zip(curve["iteration"], curve.get(column, []), strict=False) if not math.isnan(v)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def gain_points(curve: dict[str, list[float]]) -> tuple[list[float], list[float]]:
    """(iterations, val gain in dB) where the run validated."""
    return val_points(curve, "val_gain_db")


def last_quarter_rise(curve: dict[str, list[float]]) -> float | None:
    """Gain at the last validation minus the gain at the last validation at or before 3/4 of it (None: fewer
    than two validations, or none in the first three quarters)."""
    iterations, gains = gain_points(curve)
    if len(iterations) < 2:
        return None
    earlier = [gain for iteration, gain in zip(iterations, gains, strict=True)
               if iteration <= LAST_QUARTER * iterations[-1]]
    return gains[-1] - earlier[-1] if earlier else None


def is_flat(curve: dict[str, list[float]], flat_db: float) -> bool:
    rise = last_quarter_rise(curve)
    return rise is not None and rise < flat_db


def iterations_to_flat(curve: dict[str, list[float]], flat_db: float) -> int | None:
    """Run length at which the curve's last-quarter rise would fall under ``flat_db`` (the module's model),
    or None where the model cannot say: fewer than two validations, a later half that does not fit a rising
    curve, or a fit that calls the curve flat already although its measured rise says otherwise (with few
    validations the measured "last quarter" spans more of the run than a quarter)."""
    iterations, gains = gain_points(curve)
    recent = max(2, (len(iterations) + 1) // 2)
    t, g = np.asarray(iterations[-recent:], dtype=np.float64), np.asarray(gains[-recent:], dtype=np.float64)
    if t.size < 2:
        return None
    design = np.stack([np.ones_like(t), -1.0 / t], axis=1)
    (_, b), *_ = np.linalg.lstsq(design, g, rcond=None)
    needed = b / (3 * flat_db) if math.isfinite(b) and b > 0 else math.inf
    return int(math.ceil(needed)) if iterations[-1] < needed < math.inf else None


def iterations_to_reach(curve: dict[str, list[float]], gain_db: float) -> float | None:
    """The first iteration at which the val gain reached ``gain_db``, interpolated linearly between the
    validations around it (None: never reached)."""
    iterations, gains = gain_points(curve)
    previous = (0.0, 0.0)  # an untrained net returns its input: gain 0 at iteration 0
    for iteration, gain in zip(iterations, gains, strict=True):
        if gain >= gain_db:
            (t0, g0), t1 = previous, iteration
            return t1 if gain == g0 else t0 + (t1 - t0) * (gain_db - g0) / (gain - g0)
        previous = (iteration, gain)
    return None


def training_seconds(curve: dict[str, list[float]]) -> float | None:
    """Wall seconds the run trained, validations included, from progress.csv's wall_time: the sum of the
    intervals between its rows, where an interval over :data:`PAUSE_SECONDS` (a stop and a later resume) counts
    as a typical one, and the first row's own time is taken as a typical interval."""
    times = np.asarray([value for value in curve.get("wall_time", []) if not math.isnan(value)], dtype=np.float64)
    if times.size < 2:
        return None
    intervals = np.diff(times)
    typical = float(np.median(intervals))
    return float(np.where(intervals > PAUSE_SECONDS, typical, intervals).sum() + typical)
