"""What the main job does, profile by profile: its budgets (the demo, the long profile, the quick test
version) and the runs each one trains.

A profile differs from another only by its :class:`Budget`: how many iterations and seeds, which blur the
headline trains on, which blur lengths it is scored at. ``mrfnet reproduce --profile NAME`` picks one
(:data:`PROFILES`); each writes its own report folder and keeps its own work folder, so the demo's runs and
the long profile's never mix.
"""

from __future__ import annotations

from dataclasses import dataclass

from mrfnet.reproduce.claims import HEADLINE, VARIANT_ORDER, ablation_run
from mrfnet.reproduce.paper import PAPER_TABLE_III
from mrfnet.reproduce.real_blur import RealBlur
from netgen.network import OUTPUT_LR_MULT

PAPER_VARIANTS = VARIANT_ORDER  # the paper's four, listed explicitly (mrfnet.reproduce.claims), not netgen's registry


@dataclass(frozen=True)
class Budget:
    """How much work each stage does: the only difference between one profile and another."""

    headline_iterations: int
    ablation_iterations: int
    seeds: tuple[int, ...]  # each ablation run is repeated once per seed: the spread is its noise
    batch_size: int
    crop_size: int
    ablation_crop_size: int
    patch_size: int
    copies: int
    test_copies: int  # blur draws of each whole test photograph
    max_motion: int  # longest motion blur of the embedded set (see docs/architecture.md, "Training on a small budget")
    base_lr: float
    halvings: int
    loss_schedule: str  # the scale refinement loss's weights over a run (headline and mrfnet-scale runs)
    headline_validations: int  # val scores of the headline run (the last at its final iteration)
    ablation_validations: int  # val scores of each ablation run
    val_limit: int | None  # val records scored (None: all)
    timing_sizes: tuple[tuple[int, int], ...]  # (height, width)
    timing_repeats: int
    memory_batches: tuple[int, ...]
    memory_side: int
    memory_run: bool  # also run each training memory case (peak RSS) where it fits, not only count it
    caffe_time: bool  # also run `caffe time` beside the Python timing
    precision: str  # the training runs' (de)convolution arithmetic (netgen.engine.PRECISIONS)
    minutes: int  # what the whole job takes on the 2-core development machine, said when it starts
    real_blur: RealBlur = RealBlur()
    headline_max_motion: int | None = None  # the headline's own, longer blur (None: max_motion, the ablation's data)
    headline_copies: int | None = None  # blur draws per patch of the headline's own train/val data (None: copies)
    headline_augment: bool = False  # flips, rotations and colour changes of the headline's own training patches
    blur_lengths: tuple[int, ...] = ()  # exact motion lengths the headline is scored at, beside the linear filter
    coarse_output_lr_mult: float = OUTPUT_LR_MULT  # the scale-loss runs' coarse output convolutions (netgen)
    flat_db: float = 0.05  # a run's val curve is flat when its gain rose less than this over its last quarter

    def __post_init__(self) -> None:
        own_data = self.headline_copies not in (None, self.copies) or self.headline_augment
        if own_data and self.headline_max_motion in (None, self.max_motion):
            raise ValueError("a headline with its own copies or augmentation needs its own headline_max_motion: "
                             "its data folder is named by its blur (mrfnet.reproduce.datasets.data_dir)")


FULL = Budget(
    headline_iterations=5000, ablation_iterations=360, seeds=(0, 1), batch_size=4, crop_size=64, ablation_crop_size=48,
    patch_size=96, copies=1, test_copies=8, max_motion=5, base_lr=5e-4, halvings=3, loss_schedule="uniform",
    headline_validations=10, ablation_validations=2, val_limit=None, timing_sizes=((256, 256), (720, 1280)),
    timing_repeats=1, memory_batches=tuple(PAPER_TABLE_III), memory_side=256, memory_run=True,
    caffe_time=False, precision="fp32", minutes=50)


# The long profile (issue 27): every ablation run over three seeds until its curve flattens, the headline on
# blur up to 15 px scored at 5, 10 and 15 px. Sized on the DNNL engine's measured steps (the demo's report:
# 0.33 s per headline iteration with validation, 0.16-0.58 s per ablation iteration): about 2.5 hours.
# MRFNet's 1,000-iteration runs at 48x48 ended flat (last-quarter rise under 0.05 dB); the scale loss keeps the
# default coarse rate and uniform weights, its best chance as measured (docs/architecture.md, "Profiles"). The
# headline's 8 blur draws per patch and augmentation: with one draw it learned its 608 fixed pairs and gained
# less at every blur length (measured there, "Stronger blur"). Measured whole: 4,806 s (reports/embedded-cpu-long).
LONG = Budget(
    headline_iterations=8000, ablation_iterations=1000, seeds=(0, 1, 2), batch_size=4, crop_size=64,
    ablation_crop_size=48, patch_size=96, copies=1, test_copies=8, max_motion=5, base_lr=5e-4, halvings=3,
    loss_schedule="uniform", headline_validations=16, ablation_validations=8, val_limit=None,
    timing_sizes=((256, 256), (720, 1280)), timing_repeats=1, memory_batches=tuple(PAPER_TABLE_III), memory_side=256,
    memory_run=True, caffe_time=False, precision="fp32", minutes=80, headline_max_motion=15, headline_copies=8,
    headline_augment=True, blur_lengths=(5, 10, 15))


# The few-minute version the tests run: every stage and code path of the long profile, on tiny budgets.
QUICK = Budget(
    headline_iterations=12, ablation_iterations=6, seeds=(0, 1), batch_size=2, crop_size=32, ablation_crop_size=32,
    patch_size=48, copies=1, test_copies=1, max_motion=5, base_lr=2e-4, halvings=3, loss_schedule="uniform",
    headline_validations=2, ablation_validations=2, val_limit=8, timing_sizes=((64, 64),), timing_repeats=1,
    memory_batches=tuple(PAPER_TABLE_III), memory_side=64, memory_run=True, caffe_time=False, precision="fp32",
    minutes=5, real_blur=RealBlur(step=25), headline_max_motion=10, headline_copies=2, headline_augment=True,
    blur_lengths=(5, 10))


# --profile NAME -> its budget and the name of its report folder (reports/<name>/).
PROFILES = {"demo": (FULL, "embedded-cpu"), "long": (LONG, "embedded-cpu-long"), "quick": (QUICK, "quick")}


@dataclass(frozen=True)
class RunSpec:
    """One training run of the main job."""

    variant: str
    loss_schedule: str
    iterations: int
    crop_size: int
    seed: int
    group: str  # "headline" or the ablation it belongs to ("l2" or "scale")
    validations: int
    max_motion: int  # the training data's longest motion blur (which data folder it reads)
    coarse_output_lr_mult: float


def run_plan(budget: Budget) -> dict[str, RunSpec]:
    """Run name -> spec: the headline MRFNet, then per seed the four variants with a single full-resolution L2
    (Table V's ablation) and MRFNet with the scale refinement loss (Fig. 5's comparison), all on one budget."""
    scale_rate = budget.coarse_output_lr_mult
    plan = {HEADLINE: RunSpec("mrfnet", budget.loss_schedule, budget.headline_iterations, budget.crop_size, 0,
                              "headline", budget.headline_validations, headline_motion(budget), scale_rate)}
    for seed in budget.seeds:
        for variant in PAPER_VARIANTS:
            plan[ablation_run(variant, "l2", seed)] = RunSpec(
                variant, "full-only", budget.ablation_iterations, budget.ablation_crop_size, seed, "l2",
                budget.ablation_validations, budget.max_motion, scale_rate)  # the same nets as the scale runs'
        plan[ablation_run("mrfnet", "scale", seed)] = RunSpec(
            "mrfnet", budget.loss_schedule, budget.ablation_iterations, budget.ablation_crop_size, seed, "scale",
            budget.ablation_validations, budget.max_motion, scale_rate)
    return plan


def headline_motion(budget: Budget) -> int:
    """The longest motion blur the headline trains on."""
    return budget.max_motion if budget.headline_max_motion is None else budget.headline_max_motion


def headline_copies(budget: Budget) -> int:
    """Blur draws of each patch of the headline's training and val data."""
    return budget.copies if budget.headline_copies is None else budget.headline_copies
