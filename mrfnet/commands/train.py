"""`mrfnet train`: start or resume a training run.

Started by `mpirun -np N` or `srun`, each rank is one solver of a data-parallel run (gradients averaged
over MPI on the CPU, NCCL on GPUs); rank 0 writes the run folder (README, "Training on several hosts").
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from contextlib import nullcontext
from pathlib import Path

from mrfnet.commands.argtypes import fraction, non_negative_int, positive_float, positive_int
from mrfnet.infer.run_folder import PROGRESS, SNAPSHOT_DIR
from mrfnet.runtime.caffe_env import CaffeError
from mrfnet.runtime.folder_lock import holding
from mrfnet.train.driver import (
    DEFAULT_DATA,
    TrainOptions,
    check_gpus,
    check_precision,
    check_ranks,
    load_options,
    prepare_run,
    train,
)
from mrfnet.train.loss_schedule import LOSS_SCHEDULES
from mrfnet.train.ranks import RankRefused, Ranks, launched_by_mpi
from mrfnet.train.schedule import HALVE_EVERY_EPOCHS
from mrfnet.train.snapshots import TrainingError
from netgen.engine import PRECISIONS
from netgen.variants import VARIANTS

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    if not launched_by_mpi():
        return _run(args, None)
    ranks = Ranks()  # one rank of `mpirun -np N mrfnet train` / `srun mrfnet train`
    try:
        if ranks.world.size == 1:  # one rank: a plain run (which can drive one host's GPUs with NCCL)
            ranks.close()
            return _run(args, None)
        return _run(args, ranks)
    except RankRefused as exc:  # rank 0 says why, once
        log.debug("rank %d: %s", ranks.world.rank, exc)
        return 1
    finally:
        ranks.close()


def _run(args: argparse.Namespace, ranks: Ranks | None) -> int:
    if args.resume:
        if args.weights:
            raise ValueError("--resume continues a run from its solverstate; --weights starts a new one: pick one")
        run_dir = Path(args.run_dir)
        load_options(run_dir)  # not a run folder: said here, before its lock is asked for
    else:
        options = TrainOptions(
            variant=args.variant, data=str(args.data or DEFAULT_DATA), run_dir=str(args.run_dir),
            batch_size=args.batch_size,
            crop_size=args.crop_size, epochs=args.epochs, iterations=args.iterations, base_lr=args.base_lr,
            halve_every_epochs=args.halve_every_epochs, snapshot_every=args.snapshot_every,
            keep_snapshots=args.keep_snapshots, loss=args.loss,
            loss_schedule=args.loss_schedule, gpus=args.gpus, seed=args.seed,
            weights=str(args.weights) if args.weights else None, edge=args.edge, edge_alpha_at=args.edge_alpha_at,
            val_every=args.val_every, val_limit=args.val_limit, ranks=ranks.world.size if ranks else 1,
            precision=args.precision)

        def create() -> Path:
            if ranks is not None:
                check_ranks(options, ranks.worlds)
            check_gpus(options.gpus)  # before the run folder exists, so a refused run leaves nothing behind
            check_precision(options.precision, options.gpus)
            return prepare_run(options, ["mrfnet", *sys.argv[1:]], keep_lock=True)

        run_dir = ranks.agree(create) if ranks else create()
    leader = ranks is None or ranks.world.leader
    # the process that writes the run folder holds its lock (a new run's since before it existed)
    with holding(run_dir) if leader else nullcontext():
        try:
            result = train(run_dir, resume=args.resume, data=args.data if args.resume else None, ranks=ranks)
        except (TrainingError, CaffeError) as exc:
            if not args.resume and _nothing_trained(run_dir) and leader:
                shutil.rmtree(run_dir)
                exc.args = (f"{exc}\n(the new run folder {run_dir} was removed again: nothing had been trained)",)
            if isinstance(exc, CaffeError):
                raise
            log.error("%s", exc)
            return 1
    return 130 if result.status == "stopped" else 0


def _nothing_trained(run_dir: Path) -> bool:
    """No snapshot written and no iteration recorded: a run that failed at its start."""
    progress = run_dir / PROGRESS
    return (not any((run_dir / SNAPSHOT_DIR).glob("*_iter_*"))
            and (not progress.is_file() or len(progress.read_text().splitlines()) <= 1))


def _gpu_list(text: str) -> list[int]:
    try:
        return [int(g) for g in text.split(",") if g != ""]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--gpus takes device ids like 0,1,2,3, not {text!r}") from exc


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a variant with Adam (CPU, one GPU or several with NCCL)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, type=Path, help="the run folder (must not exist unless --resume)")
    parser.add_argument("--resume", action="store_true", help="continue the run folder from its latest solverstate")
    parser.add_argument("--variant", default="mrfnet", choices=list(VARIANTS), help="the network (default: mrfnet)")
    parser.add_argument("--data", type=Path, default=None,
                        help="data_prep output folder holding train_lmdb (and val_lmdb) (default: data/embedded; "
                             "with --resume: where the run's LMDBs are now, if they moved)")
    parser.add_argument("--batch-size", type=positive_int, default=16,
                        help="total batch over all GPUs or MPI ranks (paper: 16)")
    parser.add_argument("--crop-size", type=positive_int, default=256, help="random crop side (paper: 256)")
    parser.add_argument("--epochs", type=positive_float, default=50, help="epochs (paper: 50 GOPRO, 70 VisDrone)")
    parser.add_argument("--iterations", type=positive_int, help="train this many iterations instead of --epochs")
    parser.add_argument("--base-lr", type=positive_float, default=1e-4,
                        help="Adam's initial learning rate (paper: 1e-4)")
    parser.add_argument("--halve-every-epochs", type=positive_float, default=HALVE_EVERY_EPOCHS,
                        help="halve the learning rate every this many epochs (paper: 10)")
    parser.add_argument("--snapshot-every", type=positive_int,
                        help="snapshot interval in iterations (default: one epoch)")
    parser.add_argument("--keep-snapshots", type=positive_int, metavar="K",
                        help="keep only the newest K good snapshot pairs (caffemodel + solverstate, finite), "
                             "deleting older ones as training goes (default: keep all)")
    parser.add_argument("--loss", choices=("native", "python"), default="native",
                        help="scale refinement loss as native EuclideanLoss layers or the Python layer")
    parser.add_argument("--loss-schedule", default="coarse-to-fine",
                        help=f"per-scale loss weights over the run: {', '.join(LOSS_SCHEDULES)} or ITER:w1,..;..")
    parser.add_argument("--gpus", type=_gpu_list, default=[],
                        help="GPU ids, e.g. 0,1,2,3 (default: CPU); under mpirun/srun the GPUs of each host, one "
                             "per rank there")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="the (de)convolutions' arithmetic: bf16 computes them in bfloat16 on oneDNN (float "
                             "blobs, accumulation and master weights; 1.1-1.3x faster per training step on the AMX "
                             "CPU measured, see the README's 'Speed'; refused where the CPU has no native bfloat16; "
                             "CPU only) (default: fp32)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="Caffe's random_seed (crops, mirrors, fillers)")
    parser.add_argument("--weights", type=Path, help="fine-tune from this caffemodel (exclusive with --resume)")
    parser.add_argument("--edge", action="store_true",
                        help="add the edge reconstruction branch (section 3.3.3; off by default, see the README)")
    parser.add_argument("--edge-alpha-at", type=fraction, default=0.5,
                        help="fraction of the run at which the edge generator switches from the blurred input "
                             "to the prediction (alpha 0 -> 1; default: %(default)s, the paper's 'middle')")
    parser.add_argument("--val-every", type=positive_int,
                        help="every this many iterations (and at the end), score the current weights on DATA's "
                             "val_lmdb (PSNR/SSIM as `mrfnet score`, and the gain over the blurry input) into "
                             "progress.csv; the best weights go to snapshots/best.caffemodel, their scores to "
                             "best.json (default: no validation)")
    parser.add_argument("--val-limit", type=positive_int,
                        help="validate on the first N val records only (the LMDB's shuffled order; "
                             "default: all of them)")
    parser.set_defaults(run=run)
