"""`mrfnet demo`: the main job on the embedded default data.

For now: the doctor's report, then a tiny real Caffe training run (forward, backward, Adam
updates) whose loss must fall. Later stages (LMDB build, training the four variants, scoring)
replace the tiny run as they land.
"""

from __future__ import annotations

import argparse
import logging

from mrfnet import doctor
from mrfnet.caffe_env import run_isolated
from mrfnet.smoke import train_tiny_net

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    if doctor.run(argparse.Namespace(json=False)) != 0:
        return 1
    losses = run_isolated(train_tiny_net, iterations=args.iterations, seed=args.seed, timeout=600)
    log.info("tiny conv net, %d Adam iterations: loss %.5f -> %.5f", len(losses), losses[0], losses[-1])
    if not losses[-1] < losses[0]:
        log.error("the loss did not fall")
        return 1
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the main job on the embedded default data",
                                   description=__doc__)
    parser.add_argument("--iterations", type=int, default=50, help="Adam iterations of the tiny run")
    parser.add_argument("--seed", type=int, default=0, help="random seed of data and weights")
    parser.set_defaults(run=run)
