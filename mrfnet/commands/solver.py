"""`mrfnet solver`: write a solver prototxt for a dataset's record count."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data_prep.option_fields import non_negative_int, positive_float, positive_int
from data_prep.records import count_records
from mrfnet.runtime.errors import InvalidValue
from mrfnet.train.schedule import DATASETS, Schedule, write_solver

log = logging.getLogger(__name__)


def _schedule_from_args(args: argparse.Namespace) -> Schedule:
    preset = DATASETS.get(args.dataset, {})
    records = args.records
    if records is None and args.train_lmdb:
        records = count_records(args.train_lmdb)
    records = records or preset.get("records")
    if records is None:
        raise InvalidValue(f"dataset {args.dataset!r} has no preset size: give --records or --train-lmdb")
    return Schedule(records=records, batch_size=args.batch_size, gpus=args.gpus,
                    epochs=args.epochs or preset.get("epochs", 50), val_records=args.val_records)


def run(args: argparse.Namespace) -> int:
    schedule = _schedule_from_args(args)
    out = args.out or Path("solvers") / f"{args.variant}_{args.dataset}.prototxt"
    net = args.net or f"prototxt/{args.variant}/train_val.prototxt"
    write_solver(out, schedule, net=net, snapshot_prefix=f"snapshots/{args.variant}_{args.dataset}",
                 base_lr=args.base_lr, seed=args.seed, gpu=args.gpus > 1)
    log.info("wrote %s: %d iterations/epoch, max_iter %d, lr halved every %d iterations",
             out, schedule.iterations_per_epoch, schedule.max_iter, schedule.stepsize)
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("solver", help="write an Adam solver prototxt with the paper's schedule",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="mrfnet", help="network variant, names the file")
    parser.add_argument("--dataset", default="gopro",
                        help=f"dataset name; presets for size and epochs: {', '.join(DATASETS)}")
    parser.add_argument("--records", type=positive_int, help="training records (overrides the preset)")
    parser.add_argument("--train-lmdb", type=Path, help="count the training records of this LMDB")
    parser.add_argument("--val-records", type=non_negative_int, default=0, help="val records; 0 disables testing")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="total batch over all GPUs")
    parser.add_argument("--gpus", type=positive_int, default=1, help="number of GPUs the batch is split over")
    parser.add_argument("--epochs", type=positive_float, help="epochs (default: the dataset preset, else 50)")
    parser.add_argument("--base-lr", type=positive_float, default=1e-4, help="initial learning rate")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="Caffe's random_seed")
    parser.add_argument("--net", help="net path written into the solver")
    parser.add_argument("--out", type=Path, help="output file (default solvers/<variant>_<dataset>.prototxt)")
    parser.set_defaults(run=run, computes=False)  # no Caffe work: the free cores are not measured
