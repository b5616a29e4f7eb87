"""Benchmark `mrfnet deblur` per variant, Caffe build and engine: seconds per image, whole or tiles, peak RSS.

    .venv/bin/python tools/bench_inference.py [--variants mrfnet ...] [--sizes 1280x720] [--repeats 1]
        [--caffe PREFIX --caffe PREFIX ...] [--max-memory-gb GB]
        [--engines caffe,onnxruntime,onnxruntime-int8 [--model RUN] [--calibrate VAL_LMDB] [--test-lmdb LMDB]]

Every (build, setting, variant, size) runs in its own child process, so each peak RSS is its own.
--caffe names a prefix of tools/install_caffe.sh (repeatable; default: the Caffe this Python imports).
A build with the project's lean patches runs two settings: "workspace" (the shared im2col workspace
of 0004 alone: a deploy net without share_test_blobs) and "lean" (0004 and 0005's shared TEST blobs);
any other build runs "bvlc". An image runs whole when its counted Caffe memory fits --max-memory-gb,
else in the tiles `mrfnet deblur` would pick, as `mrfnet deblur` runs it (uint8 in, padded to the
stride, uint8 out). Weights come from the prototxt's fillers (speed does not depend on them); time is
the mean of --repeats calls after one warm-up call. A benchmark, not a test: numbers depend on the
machine and on what else runs on it.

--engines adds rows run by ONNX Runtime on the graph `mrfnet export` writes (the same tiles, the
same padding), "onnxruntime-int8" its INT8 QDQ model calibrated on --calibrate's patches; with a
trained --model and --test-lmdb it also prints each engine's PSNR/SSIM on that held-out set. Their
defaults are the main job's MRFNet and LMDBs (`bash tools/bootstrap.sh demo`), where they exist.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mrfnet.evaluate.scoring import ScoreOptions, score_model
from mrfnet.evaluate.testsets import open_test_set
from mrfnet.export.exporter import export_model, save_onnx
from mrfnet.export.onnx_model import OnnxModel
from mrfnet.export.quantize import calibration_patches, export_int8
from mrfnet.infer.memory import lean_caffe
from mrfnet.infer.model import Model, resolve_tile
from mrfnet.infer.model_source import resolve_model
from mrfnet.infer.tiling import DEFAULT_OVERLAP, pad_to_stride, tile_shape
from mrfnet.reproduce.job import DEFAULT_NAME, default_work_dir, main_job_model
from mrfnet.runtime.caffe_env import caffe_prefix, import_caffe, run_script_with_build
from mrfnet.runtime.machine import default_max_memory_gb, describe_machine, machine_info
from netgen.sizes import parse_sizes, size_label

REPO = Path(__file__).resolve().parents[1]
MB = 2**20
ENGINES = ("caffe", "onnxruntime", "onnxruntime-int8")
MAIN_DATA = default_work_dir(DEFAULT_NAME) / "data"


def settings_of_this_build() -> list[str]:
    """The settings the Caffe this process imports can run."""
    from caffe.proto import caffe_pb2

    lean = "share_test_blobs" in caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name
    return ["workspace", "lean"] if lean else ["bvlc"]


def engine_model(model: Model, setting: str, calibrate: Path | None) -> Model | OnnxModel:
    """What runs the images for ``setting``: the Caffe model itself, or its export (INT8 for "onnxruntime-int8")."""
    if setting == "onnxruntime":
        return OnnxModel(export_model(model))
    if setting == "onnxruntime-int8":
        if calibrate is None:
            raise SystemExit("onnxruntime-int8 needs --calibrate VAL_LMDB (no main-job data found)")
        return OnnxModel(export_int8(model, calibration_patches(calibrate)))
    return model


def bench(variant: str, setting: str, height: int, width: int, repeats: int, max_memory_gb: float,
          overlap: int, calibrate: Path | None = None) -> dict[str, Any]:
    """In this (child) process: seconds per deblurred image, the pass used, counted memory, peak RSS."""
    from netgen import build_deploy

    with tempfile.TemporaryDirectory() as tmp:
        deploy = Path(tmp) / "deploy.prototxt"
        deploy.write_text(str(build_deploy(variant, share_blobs=setting != "workspace")))
        model = Model(deploy)
        if setting in ("workspace", "lean", "bvlc") and lean_caffe(model.net) != (setting != "bvlc"):
            raise SystemExit(f"setting {setting} does not match the Caffe at {caffe_prefix(import_caffe())}")
        estimate = model.memory()
        side = model.net.blobs[model.info.input_blob].data.shape[2]
        per_pixel = (estimate.total - estimate.parameters) / side**2
        tile = resolve_tile(model, "auto", overlap, max_memory_gb)  # Caffe's tiles, for every engine
        runner = engine_model(model, setting, calibrate)
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        shape = tile_shape(tile, *pad_to_stride(image[None, :, :, 0]).shape[1:])
        runner.deblur(image[:shape[0], :shape[1]] if shape else image, tile=tile, overlap=overlap)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            runner.deblur(image, tile=tile, overlap=overlap)
            times.append(time.perf_counter() - start)
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    return {"seconds": times, "pass": f"tiles {size_label(*shape)}" if shape else "whole",
            "counted_gb": (estimate.parameters + per_pixel * height * width) / 2**30, "peak_rss": peak}


def run_child(prefix: Path | None, args: argparse.Namespace, *extra: str) -> Any:
    """This script with ``extra`` options in a child whose pycaffe comes from ``prefix``; its JSON answer."""
    calibrate = ["--calibrate", str(args.calibrate)] if args.calibrate else []
    return run_script_with_build(prefix, __file__, ["--repeats", str(args.repeats), "--max-memory-gb",
                                                    str(args.max_memory_gb), "--overlap", str(args.overlap),
                                                    *calibrate, *extra], REPO)


def engine_scores(model_path: Path, test_lmdb: Path, calibrate: Path | None, engines: list[str],
                  folder: Path) -> list[tuple[str, float, float, float]]:
    """(engine, PSNR, SSIM, seconds) of a trained model on a held-out LMDB, by each engine."""
    source = resolve_model(model_path, work_dir=folder, last_only=True)
    weights = source.snapshots[-1][1]
    rows = []
    for engine in engines:
        if engine == "onnxruntime-int8":
            if calibrate is None:
                continue
            model = Model(source.deploy, weights)
            exported = export_int8(model, calibration_patches(calibrate), variant=source.variant)
            path = save_onnx(exported, folder / "int8.onnx")
            report = score_model(path, path, open_test_set(test_lmdb=test_lmdb))
        else:
            report = score_model(source.deploy, weights, open_test_set(test_lmdb=test_lmdb),
                                 options=ScoreOptions(engine=engine))
        rows.append((engine, report.last.psnr, report.last.ssim, report.last.seconds))
    return rows


def main() -> None:
    from netgen import VARIANTS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--sizes", default="1280x720", help="WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-memory-gb", type=float, default=default_max_memory_gb(),
                        help="Caffe memory for one pass; larger images are tiled (default: half the memory "
                             "available: %(default)s)")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
    parser.add_argument("--caffe", type=Path, action="append", default=[],
                        help="a tools/install_caffe.sh prefix to run (repeatable; default: this Python's Caffe)")
    parser.add_argument("--engines", default="caffe",
                        help=f"comma-separated, of {', '.join(ENGINES)} (default: %(default)s)")
    parser.add_argument("--model", type=Path, default=main_job_model(),
                        help="a trained run folder or caffemodel whose PSNR each engine is scored with "
                             "(default: the main job's MRFNet, %(default)s)")
    parser.add_argument("--test-lmdb", type=Path, default=MAIN_DATA / "test_lmdb",
                        help="held-out set for those scores (default: %(default)s)")
    parser.add_argument("--calibrate", type=Path, default=None,
                        help=f"INT8 calibration LMDB (default: {MAIN_DATA / 'val_lmdb'} if it exists)")
    parser.add_argument("--child", nargs=4, metavar=("VARIANT", "SETTING", "HEIGHT", "WIDTH"), help=argparse.SUPPRESS)
    parser.add_argument("--list-settings", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scores", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    engines = [engine.strip() for engine in args.engines.split(",") if engine.strip()]
    unknown = [engine for engine in engines if engine not in ENGINES]
    if unknown or not engines:
        parser.error(f"--engines: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(ENGINES)}")
    if args.calibrate is None and (MAIN_DATA / "val_lmdb").is_dir():
        args.calibrate = MAIN_DATA / "val_lmdb"
    if args.list_settings:
        print(json.dumps({"settings": settings_of_this_build(), "prefix": str(caffe_prefix(import_caffe()))}))
        return
    if args.scores:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(engine_scores(args.model, args.test_lmdb, args.calibrate, engines, Path(tmp))))
        return
    if args.child:
        variant, setting, height, width = args.child
        print(json.dumps(bench(variant, setting, int(height), int(width), args.repeats, args.max_memory_gb,
                               args.overlap, args.calibrate)))
        return
    builds = [(prefix, run_child(prefix, args, "--list-settings")) for prefix in (args.caffe or [None])]
    if "caffe" not in engines:
        builds = []
    onnx_engines = [engine for engine in engines if engine != "caffe"]
    print(f"machine: {describe_machine(machine_info())}")
    print(f"deblur, seconds per image (mean of {args.repeats} after a warm-up); one pass when the counted "
          f"Caffe memory fits {args.max_memory_gb} GB, else tiles (overlap {args.overlap})")
    for build in builds:
        print(f"build {build[1]['prefix']}: settings {', '.join(build[1]['settings'])}")
    print("\n| size | variant | setting | pass | counted GB | seconds | peak RSS MB | time vs first | RSS vs first |")
    print("|---|---|---|---|---|---|---|---|---|")
    for height, width in parse_sizes(args.sizes):
        for variant in args.variants:
            first = None
            # beside ONNX Runtime, each build's own deblur setting only (the last: lean, or bvlc)
            runs = [(prefix, setting) for prefix, found in builds
                    for setting in (found["settings"][-1:] if onnx_engines else found["settings"])]
            for prefix, setting in runs + [(None, engine) for engine in onnx_engines]:
                got = run_child(prefix, args, "--child", variant, setting, str(height), str(width))
                seconds, rss = float(np.mean(got["seconds"])), got["peak_rss"] / MB
                first = first or (seconds, rss)
                print(f"| {size_label(height, width)} | {variant} | {setting} | {got['pass']} | "
                      f"{got['counted_gb']:.2f} | {seconds:.2f} | {rss:.0f} | {first[0] / seconds:.2f}x | "
                      f"{rss / first[1]:.2f} |", flush=True)
    if onnx_engines and args.model.exists() and args.test_lmdb.is_dir():
        rows = run_child(None, args, "--scores", "--engines", ",".join(engines), "--model", str(args.model),
                         "--test-lmdb", str(args.test_lmdb))
        print(f"\n{args.model} on {args.test_lmdb} (whole images):\n")
        print("| engine | PSNR (dB) | SSIM | PSNR change | seconds (all images) |")
        print("|---|---|---|---|---|")
        for engine, psnr, ssim, seconds in rows:
            print(f"| {engine} | {psnr:.3f} | {ssim:.4f} | {psnr - rows[0][1]:+.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
