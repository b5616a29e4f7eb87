"""`mrfnet <command>`: one entry point with argparse subcommands, like `caffe <command>`.

Each command lives in its own module, which adds its parser in ``setup_parser`` and sets
``run``; errors the user can act on are reported in one line, with exit code 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from data_prep.atomic import DiskFull
from mrfnet.runtime.caffe_env import CaffeError, CaffeNotAvailable, quiet_glog
from mrfnet.runtime.folder_lock import FolderBusy

# Modules with a `setup_parser(subparsers)`, one per command, in the order `--help` lists them.
COMMANDS = tuple(f"mrfnet.commands.{name}" for name in (
    "doctor", "netgen", "data_prep", "solver", "train", "plot_log", "score", "table", "time", "deblur", "export",
    "reproduce", "report"))
USER_ERRORS = (CaffeError, CaffeNotAvailable, FileNotFoundError, FileExistsError, ValueError, FolderBusy,
               DiskFull)

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
        return args.run(args)
    except USER_ERRORS as exc:
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
