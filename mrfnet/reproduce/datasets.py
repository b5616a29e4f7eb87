"""The main job's datasets, each built once per work folder and reused while its settings hold: the embedded
set at the ablation's blur, the headline's own longer blur where a profile asks for it, and one set per exact
blur length that the headline is scored at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_prep.options import BuildOptions
from mrfnet.reproduce.budgets import Budget, headline_copies, headline_motion
from mrfnet.reproduce.built_data import reuse_or_build


def data_dir(work_dir: Path, budget: Budget, max_motion: int) -> Path:
    """The training data of runs whose blur goes up to ``max_motion``: ``data`` at the ablation's blur (the
    demo's one folder), ``data-m<N>`` for a longer one."""
    return work_dir / ("data" if max_motion == budget.max_motion else f"data-m{max_motion}")


def length_dir(work_dir: Path, length: int) -> Path:
    """The set blurred at exactly ``length`` pixels of motion (its test split is what is scored)."""
    return work_dir / f"data-len{length}"


def prepare_data(work_dir: Path, budget: Budget, max_motion: int, min_motion: int | None = None,
                 out: Path | None = None, copies: int | None = None, augment: bool = False) -> dict[str, Any]:
    """The embedded LMDBs with motion blur of ``min_motion``..``max_motion`` pixels (min: the recipe's
    shortest), ``copies`` blur draws per patch (default: the budget's) and, with ``augment``, augmented training
    patches, built into ``out`` (default :func:`data_dir`) unless it already holds them; their summary."""
    data = out or data_dir(work_dir, budget, max_motion)
    options = BuildOptions(source="embedded", out=data, patch_size=budget.patch_size,
                           copies=budget.copies if copies is None else copies, test_copies=budget.test_copies,
                           max_motion=max_motion, blur_per="patch", augment=augment, force=True,
                           **({} if min_motion is None else {"min_motion": min_motion}))
    return reuse_or_build(options, {key: getattr(options, key) for key in (
        "patch_size", "copies", "test_copies", "max_motion", "min_motion", "blur_per", "augment")})


def prepare_all(work_dir: Path, budget: Budget) -> dict[str, Any]:
    """Every dataset of a profile: {"data": the ablation's summary, "headline": the headline's (the same one
    when it trains on the ablation's data), "lengths": {length: summary}}."""
    data = prepare_data(work_dir, budget, budget.max_motion)
    motion = headline_motion(budget)
    headline = data if motion == budget.max_motion else prepare_data(
        work_dir, budget, motion, copies=headline_copies(budget), augment=budget.headline_augment)
    lengths = {length: prepare_data(work_dir, budget, length, length, out=length_dir(work_dir, length))
               for length in budget.blur_lengths}
    return {"data": data, "headline": headline, "lengths": lengths}
