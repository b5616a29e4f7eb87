"""`mrfnet score`: PSNR/SSIM of a model or of every snapshot of a run."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from data_prep.option_fields import option
from mrfnet.evaluate.metrics import METRICS, MetricOptions
from mrfnet.evaluate.scoring import OUTPUT, TEST_SET, ScoreOptions, score_model, score_run
from mrfnet.evaluate.testsets import open_test_set
from mrfnet.export.engines import resolve_source
from mrfnet.export.options import INFERENCE, deploy_option, variant_option
from mrfnet.runtime.errors import InvalidValue
from mrfnet.runtime.options import add_arguments, resolve


@dataclass(frozen=True)
class ScoreTarget:
    """What `mrfnet score` scores with which deploy net, on which test set, and where its report goes: the flags
    that ScoreOptions (how it scores) and MetricOptions leave to the command (the model is its positional)."""

    deploy: Path | None = deploy_option()
    variant: str | None = variant_option()
    test_lmdb: Path | None = option(None, "data_prep LMDB of whole blurred/sharp images", parse=Path, group=TEST_SET)
    blur_dir: Path | None = option(None, "folder of blurred images", parse=Path, group=TEST_SET)
    sharp_dir: Path | None = option(None, "folder of sharp images, same relative names", parse=Path, group=TEST_SET)
    test_name: str | None = option(None, "test-set name in tables (default: from the path)", group=TEST_SET)
    out: Path | None = option(None, "output folder (default: RUN/score, or <caffemodel stem>_score beside the "
                                    "caffemodel)", parse=Path, group=OUTPUT)
    label: str | None = option(None, "name in tables (default: the run folder's or caffemodel's name)", group=OUTPUT)


def run(args: argparse.Namespace) -> int:
    target = resolve(ScoreTarget, args)
    options = resolve(ScoreOptions, args, fixed={"metrics": resolve(MetricOptions, args)})
    if target.out is not None and target.out.exists() and not target.out.is_dir():
        raise InvalidValue(f"--out {target.out} is a file; score writes a folder there (summary.json, images.csv, "
                           "...)")
    test_set = open_test_set(test_lmdb=target.test_lmdb, blur_dir=target.blur_dir, sharp_dir=target.sharp_dir,
                             name=target.test_name)
    model = Path(args.model)
    if model.is_dir():
        report = score_run(model, test_set, out_dir=target.out, deploy=target.deploy, variant=target.variant,
                           label=target.label, options=options)
        out = target.out or model / "score"
    else:
        out = target.out or model.with_name(f"{model.stem}_score")
        source = resolve_source(model, deploy=target.deploy, variant=target.variant, work_dir=out)
        report = score_model(source.deploy, model, test_set, out_dir=out, label=target.label, variant=source.variant,
                             options=options)
    best = report.best
    engine = f", {report.engine}" if report.engine != "caffe" else ""
    print(f"{report.label} on {report.test_set['name']} ({report.test_set['images']} images, "
          f"SSIM {options.metrics.ssim}{engine}): "
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
    add_arguments(parser, ScoreTarget, MetricOptions, ScoreOptions, groups=(TEST_SET, METRICS, INFERENCE, OUTPUT))
    parser.set_defaults(run=run)
