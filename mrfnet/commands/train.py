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
from dataclasses import fields
from pathlib import Path

from mrfnet.runtime.caffe_env import CaffeError
from mrfnet.runtime.errors import InvalidValue
from mrfnet.runtime.folder_lock import holding
from mrfnet.runtime.options import add_arguments, flag_of, read_config, resolve
from mrfnet.runtime.run_files import PROGRESS, SNAPSHOT_DIR
from mrfnet.train.driver import train
from mrfnet.train.options import TrainOptions, load_options
from mrfnet.train.ranks import RankRefused, Ranks, launched_by_mpi
from mrfnet.train.run_setup import check_gpus, check_precision, check_ranks, prepare_run
from mrfnet.train.snapshots import TrainingError

log = logging.getLogger(__name__)

TRAIN_FLAGS = {field.name for field in fields(TrainOptions) if field.metadata["cli"]}


def run(args: argparse.Namespace) -> int:
    if not launched_by_mpi():
        return _run(args, None)
    ranks = Ranks()  # one rank of `mpirun -np N mrfnet train` / `srun mrfnet train`
    try:
        if ranks.world.size == 1:  # one rank: a plain run (which can drive one host's GPUs with NCCL)
            ranks.close()
            return _run(args, None)
        return _run(args, ranks)
    except RankRefused as exc:
        # rank 0 says why, once, and exits 1 (mpirun's exit code); this rank exits 0, because mpirun kills
        # the other ranks as soon as one exits non-zero, and rank 0 might not have said it yet
        log.debug("rank %d: %s", ranks.world.rank, exc)
        return 0
    finally:
        ranks.close()


def _run(args: argparse.Namespace, ranks: Ranks | None) -> int:
    if args.resume:
        given = [name for name in vars(args) if name in TRAIN_FLAGS and name != "data"]
        if given or args.config or args.overrides:
            flags = [flag_of(name) for name in given] + (["--config"] if args.config else []) + args.overrides
            raise InvalidValue(f"--resume continues the run with the options it was made with; {', '.join(flags)} "
                             "would change them (only --data may say where its LMDBs are now)")
        run_dir = Path(args.run_dir)
        load_options(run_dir)  # not a run folder: said here, before its lock is asked for
    else:
        config = read_config(args.config) if args.config else None
        if config is not None:
            config.pop("run_dir", None)  # a run's own options.json names its folder: this run is --run-dir
        options = resolve(TrainOptions, args, config=config, overrides=args.overrides,
                          fixed={"run_dir": str(args.run_dir), "ranks": ranks.world.size if ranks else 1})

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
            data = Path(args.data) if args.resume and getattr(args, "data", None) else None
            result = train(run_dir, resume=args.resume, data=data, ranks=ranks)
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


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a variant with Adam (CPU, one GPU or several with NCCL)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, type=Path, help="the run folder (must not exist unless --resume)")
    parser.add_argument("--resume", action="store_true", help="continue the run folder from its latest solverstate")
    parser.add_argument("--config", type=Path,
                        help="start from the options in this JSON file: a run's options.json (the same run again, "
                             "in --run-dir) or one written by hand; KEY=VALUE and flags override it")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="an option by its options.json name (batch_size=4, val_every=50), over --config")
    add_arguments(parser, TrainOptions)
    parser.set_defaults(run=run)
