"""`mrfnet <command>`: one entry point with argparse subcommands, like `caffe <command>`.

Each command lives in its own module, which adds its parser in ``setup_parser`` and sets
``run``; the project's own errors (the user can act on them) are reported in one line, with exit code 1
(with their traceback under ``-v``); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from data_prep.atomic import DiskFull
from data_prep.errors import DataError
from mrfnet.runtime.caffe_env import CaffeError, CaffeNotAvailable, quiet_glog
from mrfnet.runtime.errors import UserError
from mrfnet.runtime.folder_lock import FolderBusy
from mrfnet.runtime.threads import choose_threads
from mrfnet.train.ranks import launched_by_mpi
from netgen.errors import NetgenError

# Modules with a `setup_parser(subparsers)`, one per command, in the order `--help` lists them.
COMMANDS = tuple(f"mrfnet.commands.{name}" for name in (
    "doctor", "netgen", "data_prep", "solver", "train", "plot_log", "score", "table", "time", "deblur", "export",
    "reproduce", "report"))
# The project's own errors, said in one line (exit 1); anything else is a bug and keeps its traceback.
USER_ERRORS = (UserError, NetgenError, DataError, DiskFull, CaffeError, CaffeNotAvailable, FolderBusy)

log = logging.getLogger("mrfnet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrfnet", description="MRFNet image deblurring, reproduced in Caffe.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        importlib.import_module(module).setup_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_glog(os.environ)  # before any command module imports caffe
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        # before any Caffe loads: the free cores of a shared machine, measured (a quarter of a second) for the
        # commands that compute (``computes``, True unless a command says otherwise); under MPI the ranks share
        # the cores out (mrfnet.train.ranks)
        if getattr(args, "computes", True) and not launched_by_mpi():
            choose_threads(os.environ)
        return args.run(args)
    except USER_ERRORS as exc:
        if args.verbose:  # -v: where it was raised, too
            log.exception("%s", exc)
        else:
            log.error("%s", exc)
        return 1
    except KeyboardInterrupt:  # no traceback: each command keeps only what it had finished (docs, "Failure modes")
        log.error("interrupted (Ctrl-C)")
        if argv is None:  # the program itself: its clean-up has run; skip atexit, where a process pool's
            logging.shutdown()  # manager thread can wait for workers the interrupt stopped
            os._exit(130)
        return 130


if __name__ == "__main__":
    sys.exit(main())
