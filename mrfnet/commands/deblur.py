"""`mrfnet deblur`: deblur your own images with a trained model."""

from __future__ import annotations

import argparse
import logging
import signal
import tempfile
from pathlib import Path
from types import FrameType

from mrfnet.export.engines import choose_engine, open_engine, resolve_source
from mrfnet.export.options import DeblurOptions
from mrfnet.infer.deblur import deblur_paths, plan_outputs
from mrfnet.reproduce.job import main_job_model
from mrfnet.runtime.errors import MissingInput
from mrfnet.runtime.options import add_arguments, resolve
from mrfnet.runtime.run_files import SNAPSHOT_DIR

log = logging.getLogger(__name__)


def default_model() -> Path:
    """The main job's headline run folder; FileNotFoundError naming the command that makes it."""
    run_dir = main_job_model()
    if not any((run_dir / SNAPSHOT_DIR).glob("*_iter_*.caffemodel")):
        raise MissingInput(f"no --model given and no trained main-job model at {run_dir}: run "
                                "`bash tools/bootstrap.sh demo` (or `mrfnet reproduce`) first, "
                                "or pass --model RUN_DIR|MODEL.caffemodel")
    return run_dir


class Terminated(BaseException):
    """SIGTERM as an exception (like Ctrl-C's KeyboardInterrupt), so that the clean-up of the image being
    written runs: its hidden partial PNG is removed (issue 24: a kill left no output, but stray files could)."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


def run(args: argparse.Namespace) -> int:
    """Deblur, with SIGTERM stopping it cleanly: Python runs the handler after the tile in progress."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return deblur(args)
    except Terminated:
        log.error("stopped by SIGTERM: the image in progress was not written (no partial or temporary file is "
                  "left); any written before it are complete")
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)


def deblur(args: argparse.Namespace) -> int:
    options = resolve(DeblurOptions, args)
    plan = plan_outputs(args.input, args.output)
    model_path = options.model if options.model is not None else default_model()
    with tempfile.TemporaryDirectory(prefix="mrfnet-deblur-") as tmp:
        source = resolve_source(model_path, deploy=options.deploy, variant=options.variant, work_dir=Path(tmp),
                                last_only=True)
        engine = choose_engine(options.engine, source, gpu=options.gpu)
        iteration, weights = source.snapshots[-1]
        log.info("model %s%s, deploy %s, engine %s", weights,
                 f" (iteration {iteration})" if iteration is not None else "", source.deploy, engine)
        model = open_engine(engine, source, weights, gpu=options.gpu)
        written, failed = deblur_paths(model, plan, tile=options.tile, overlap=options.overlap,
                                       max_memory_gb=options.max_memory_gb)
    print(f"{len(written)} of {len(plan)} image(s) written" + (f" to {written[0]}" if len(plan) == 1 else
                                                               f" under {Path(args.output)}"))
    if failed:
        print(f"{len(failed)} could not be read or do not fit --max-memory-gb: "
              + ", ".join(str(source) for source, _ in failed[:5]) + (", ..." if len(failed) > 5 else ""))
        return 1
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("deblur", help="deblur an image or a folder of images (any size, tiled)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", metavar="IN", type=Path, help="an image or a folder of images")
    parser.add_argument("output", metavar="OUT", type=Path, help="output .png, or a folder")
    add_arguments(parser, DeblurOptions)
    parser.set_defaults(run=run)
