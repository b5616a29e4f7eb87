"""A training run's options: what defines it, saved as options.json in its run folder and read back on resume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from data_prep.option_fields import fraction, gpu_list, non_negative_int, option, positive_float, positive_int
from mrfnet.runtime.errors import InvalidValue, MissingInput
from mrfnet.runtime.run_files import OPTIONS
from mrfnet.train.loss_schedule import LOSS_SCHEDULES
from mrfnet.train.schedule import HALVE_EVERY_EPOCHS
from netgen.engine import PRECISIONS
from netgen.losses import LOSSES
from netgen.network import DEFAULT_BATCH_SIZE, OUTPUT_LR_MULT
from netgen.variants import VARIANTS

DEFAULT_DATA = "data/embedded"


@dataclass
class TrainOptions:
    """Everything that defines a run: the flags of `mrfnet train` (mrfnet.runtime.options), saved as options.json
    in the run folder, and what `--config` reads back."""

    run_dir: str = option(help="the run folder (created; with --resume, continued)", parse=str, cli=False)
    variant: str = option("mrfnet", "the network", choices=VARIANTS)
    data: str = option(DEFAULT_DATA, "data_prep output folder holding train_lmdb (and val_lmdb); with --resume: "
                                     "where the run's LMDBs are now, if they moved", parse=str)
    batch_size: int = option(DEFAULT_BATCH_SIZE, "total batch over all GPUs or MPI ranks (paper: 16)",
                             parse=positive_int)
    crop_size: int = option(256, "random crop side (paper: 256)", parse=positive_int)
    epochs: float = option(50, "epochs (paper: 50 GOPRO, 70 VisDrone)", parse=positive_float)
    iterations: int | None = option(None, "train this many iterations instead of --epochs", parse=positive_int)
    base_lr: float = option(1e-4, "Adam's initial learning rate (paper: 1e-4)", parse=positive_float)
    halve_every_epochs: float = option(HALVE_EVERY_EPOCHS, "halve the learning rate every this many epochs "
                                                           "(paper: 10)", parse=positive_float)
    snapshot_every: int | None = option(None, "snapshot interval in iterations (default: one epoch)",
                                        parse=positive_int)
    loss: str = option("native", "scale refinement loss as native EuclideanLoss layers or the Python layer",
                       choices=LOSSES)
    loss_schedule: str = option("coarse-to-fine", f"per-scale loss weights over the run: {', '.join(LOSS_SCHEDULES)} "
                                                   "or ITER:w1,..;..", parse=str)
    gpus: list[int] = option([], "GPU ids, e.g. 0,1,2,3 (default: CPU); under mpirun/srun the GPUs of each host, "
                                 "one per rank there", parse=gpu_list)
    seed: int = option(0, "Caffe's random_seed (crops, mirrors, fillers)", parse=non_negative_int)
    weights: str | None = option(None, "fine-tune from this caffemodel (exclusive with --resume)", parse=str)
    coarse_output_lr_mult: float = option(OUTPUT_LR_MULT, "learning-rate multiplier of the three coarser paths' "
                                                          "output convolutions (the full-resolution one keeps "
                                                          f"{OUTPUT_LR_MULT:g}): how fast the coarse losses reach the "
                                                          "shared layers", parse=positive_float)
    edge: bool = option(False, "add the edge reconstruction branch (section 3.3.3; off by default, see the README)")
    edge_alpha_at: float = option(0.5, "fraction of the run at which the edge generator switches from the blurred "
                                       "input to the prediction (alpha 0 -> 1; the paper's 'middle')", parse=fraction)
    val_every: int | None = option(None, "every this many iterations (and at the end), score the current weights on "
                                         "DATA's val_lmdb (PSNR/SSIM as `mrfnet score`, and the gain over the blurry "
                                         "input) into progress.csv; the best weights go to snapshots/best.caffemodel, "
                                         "their scores to best.json (default: no validation)", parse=positive_int)
    val_limit: int | None = option(None, "validate on the first N val records only (the LMDB's shuffled order; "
                                         "default: all of them)", parse=positive_int)
    keep_snapshots: int | None = option(None, "keep only the newest K good snapshot pairs (caffemodel + solverstate, "
                                              "finite), deleting older ones as training goes (default: keep all)",
                                        parse=positive_int, metavar="K")
    ranks: int = option(1, "MPI ranks the run was made for (mpirun -np N); each has batch_size / ranks", cli=False)
    precision: str = option("fp32", "the (de)convolutions' arithmetic: bf16 computes them in bfloat16 on oneDNN "
                                    "(float blobs, accumulation and master weights; 1.1-1.3x faster per training "
                                    "step on the AMX CPU measured, see the README's 'Speed'; refused where the CPU "
                                    "has no native bfloat16; CPU only)", choices=PRECISIONS)

    @property
    def solvers(self) -> int:
        """Solver processes sharing each iteration's batch: the MPI ranks, or one host's GPUs."""
        return self.ranks if self.ranks > 1 else max(1, len(self.gpus))


def load_options(run_dir: Path) -> TrainOptions:
    path = run_dir / OPTIONS
    if not path.is_file():
        raise MissingInput(f"{run_dir} is not a run folder (no options.json)")
    try:
        return TrainOptions(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:  # not JSON, or not this project's options
        raise InvalidValue(f"{path} is damaged ({exc}): restore it from the run's command.txt, or start a new "
                         "run") from None
