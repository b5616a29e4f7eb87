"""`mrfnet score`: PSNR/SSIM of a model or of every snapshot of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrfnet.commands.options import add_inference_arguments, add_metric_arguments, parse_tile
from mrfnet.evaluate.metrics import MetricOptions
from mrfnet.evaluate.scoring import DEFAULT_MONTAGE_LIMIT, ScoreOptions, score_model, score_run
from mrfnet.evaluate.testsets import open_test_set
from mrfnet.export.engines import resolve_source
from mrfnet.runtime.errors import InvalidValue
from mrfnet.runtime.values import positive_int


def run(args: argparse.Namespace) -> int:
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise InvalidValue(f"--out {args.out} is a file; score writes a folder there (summary.json, images.csv, ...)")
    metrics = MetricOptions(ssim=args.ssim, y_channel=args.y_channel, crop_border=args.crop_border)
    test_set = open_test_set(test_lmdb=args.test_lmdb, blur_dir=args.blur_dir, sharp_dir=args.sharp_dir,
                             name=args.test_name)
    model = Path(args.model)
    options = ScoreOptions(metrics=metrics, save_images=args.save_images, montage=args.montage,
                           montage_limit=args.montage_limit, tile=parse_tile(args.tile), overlap=args.overlap,
                           max_memory_gb=args.max_memory_gb, limit=args.limit, gpu=args.gpu, engine=args.engine)
    if model.is_dir():
        report = score_run(model, test_set, out_dir=args.out, deploy=args.deploy, variant=args.variant,
                           label=args.label, last_only=args.last_only, options=options)
        out = Path(args.out) if args.out else model / "score"
    else:
        out = Path(args.out) if args.out else model.with_name(f"{model.stem}_score")
        source = resolve_source(model, deploy=args.deploy, variant=args.variant, work_dir=out)
        report = score_model(source.deploy, model, test_set, out_dir=out, label=args.label, variant=source.variant,
                             options=options)
    best = report.best
    engine = f", {report.engine}" if report.engine != "caffe" else ""
    print(f"{report.label} on {report.test_set['name']} ({report.test_set['images']} images, SSIM {args.ssim}"
          f"{engine}): "
          f"PSNR {report.last.psnr:.3f} dB, SSIM {report.last.ssim:.4f} (blurry input {report.baseline['psnr']:.3f} "
          f"dB, {report.baseline['ssim']:.4f})"
          + (f"; best iteration {best.iteration}: {best.psnr:.3f} dB" if len(report.results) > 1 else ""))
    if report.skipped:
        print(f"{len(report.skipped)} snapshot(s) could not be scored: "
              + ", ".join(Path(entry["caffemodel"]).name for entry in report.skipped) + " (see summary.json)")
    print(f"written to {out}")
    return 0


def setup_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="PSNR/SSIM of a caffemodel or of every snapshot of a run",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="a run folder (every snapshot), a .caffemodel, or an .onnx file")
    parser.add_argument("--deploy", type=Path, help="deploy prototxt (default: the run's, or generated for --variant)")
    parser.add_argument("--variant", help="variant whose deploy net netgen generates, for a bare caffemodel")
    data = parser.add_argument_group("test set (an LMDB or two folders)")
    data.add_argument("--test-lmdb", type=Path, help="data_prep LMDB of whole blurred/sharp images")
    data.add_argument("--blur-dir", type=Path, help="folder of blurred images")
    data.add_argument("--sharp-dir", type=Path, help="folder of sharp images, same relative names")
    data.add_argument("--test-name", help="test-set name in tables (default: from the path)")
    data.add_argument("--limit", type=positive_int, help="score only the first N images")
    add_metric_arguments(parser)
    add_inference_arguments(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path,
                        help="output folder (default: RUN/score, or <caffemodel stem>_score beside the caffemodel)")
    output.add_argument("--label", help="name in tables (default: the run folder's or caffemodel's name)")
    output.add_argument("--save-images", action="store_true", help="write each output as PNG (last snapshot)")
    output.add_argument("--montage", action="store_true",
                        help="blur | output | sharp montages with a zoomed crop, and a contact sheet (last snapshot)")
    output.add_argument("--montage-limit", type=positive_int, default=DEFAULT_MONTAGE_LIMIT,
                        help="montage this many images, spread evenly over the test set (default: %(default)s)")
    output.add_argument("--last-only", action="store_true", help="score only the latest snapshot of a run")
    parser.set_defaults(run=run)
