"""`mrfnet export`: a trained model as an ONNX file for ONNX Runtime (optionally INT8), checked against Caffe.

The ONNX graph takes ``blur``, N x 3 x H x W BGR on the 0..1 scale (any batch, height and width),
and returns out_r1..out_r4, the coarse-to-fine predictions; out_r4 is the deblurred image.
Run it with `mrfnet deblur IN OUT --model model.onnx`, or in any ONNX Runtime.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from mrfnet.commands.options import check_writable
from mrfnet.export.exporter import export_model, save_onnx, verify
from mrfnet.export.options import ExportOptions
from mrfnet.export.quantize import calibration_patches, quantize_int8
from mrfnet.infer.model import Model
from mrfnet.infer.model_source import resolve_model
from mrfnet.runtime.errors import InvalidValue
from mrfnet.runtime.options import add_arguments, resolve

log = logging.getLogger(__name__)


def check_out(out: Path) -> None:
    """Refuse an --out that cannot take the file, before the work."""
    if out.suffix.lower() != ".onnx":
        raise InvalidValue(f"--out {out}: give a file name ending in .onnx")
    if out.is_dir():
        raise InvalidValue(f"--out {out} is a folder; give a file name ending in .onnx")
    check_writable("--out", out.parent)


def run(args: argparse.Namespace) -> int:
    options = resolve(ExportOptions, args)
    check_out(options.out)
    if options.calibrate is not None and not options.int8:
        raise InvalidValue("--calibrate is the INT8 calibration set: give it with --int8")
    if options.int8 and options.calibrate is None:
        raise InvalidValue("--int8 needs --calibrate VAL_LMDB (validation patches that set the activation ranges)")
    patches = calibration_patches(options.calibrate, options.calibration_patches) if options.int8 else None
    with tempfile.TemporaryDirectory(prefix="mrfnet-export-") as tmp:
        source = resolve_model(args.model, deploy=options.deploy, variant=options.variant, work_dir=Path(tmp),
                               last_only=True)
        iteration, weights = source.snapshots[-1]
        model = Model(source.deploy, weights)
        exported = export_model(model, variant=source.variant, opset=options.opset, for_int8=options.int8)
    difference = verify(model, exported)
    if patches is not None:
        exported = quantize_int8(exported, patches)
        int8_difference = verify(model, exported, tolerance=None)
    save_onnx(exported, options.out)
    print(f"{weights}" + (f" (iteration {iteration})" if iteration is not None else "")
          + f" -> {options.out} (opset {options.opset}, {options.out.stat().st_size / 2**20:.1f} MB); "
          + f"max |ONNX Runtime - Caffe| on a random input: {difference:.1e}"
          + (f" float, {int8_difference:.3f} INT8" if patches is not None else ""))
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a trained model to ONNX (optionally INT8-quantised)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="a run folder (its latest snapshot) or a .caffemodel")
    add_arguments(parser, ExportOptions)
    parser.set_defaults(run=run)
