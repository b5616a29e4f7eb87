"""What `mrfnet doctor` checks: the Caffe build, its Python layers, LMDB data layer, GPU and libraries."""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mrfnet.runtime.caffe_env import CaffeError, build_info, caffe_prefix, dnnl_facts, import_caffe, run_isolated
from mrfnet.runtime.device import probe_gpu

LIBRARIES = ("numpy", "google.protobuf", "skimage", "cv2", "lmdb", "scipy", "onnx", "onnxruntime")


def build_kind(build: dict[str, str]) -> dict[str, Any]:
    """GPU or CPU-only, from the build-info.txt of tools/install_caffe.sh (``build_info``).

    A GPU build (``--gpu``) records its CUDA version, architectures and libraries (lines written by
    tools/gpu_build.py's ``describe``); a CPU build has ``-DCPU_ONLY=ON`` among its CMake options.
    A Caffe built elsewhere has no build-info.txt: its kind is unknown until probed.
    """
    cmake = build.get("cmake", "")
    if "-DCPU_ONLY=OFF" in cmake or "cuda" in build:
        arch, _, ptx = build.get("cuda arch", "?").partition("; PTX ")
        cuda = build.get("cuda", "?")
        return {
            "gpu": True,
            "cuda": cuda.split(" ", 1)[0],
            "cuda_arch": arch.split(" (from", 1)[0].split(),
            "ptx": ptx or None,
            "cudnn": "-DUSE_CUDNN=ON" in cmake,
            "nccl": "-DUSE_NCCL=ON" in cmake,
            "libraries": {key[len("library "):]: value for key, value in build.items() if key.startswith("library ")},
        }
    if "-DCPU_ONLY=ON" in cmake:
        return {"gpu": False, "detail": "CPU-only build"}
    return {"gpu": None, "detail": "unknown (not built by this project)"}


def _describe_kind(kind: dict[str, Any]) -> str:
    if not kind["gpu"]:
        return kind["detail"]
    archs = " ".join(f"sm_{a}" for a in kind["cuda_arch"]) or "?"
    ptx = f" + PTX compute_{kind['ptx']}" if kind["ptx"] else ""
    return (f"GPU build: CUDA {kind['cuda']}, {archs}{ptx}, cuDNN {'on' if kind['cudnn'] else 'off'}, "
            f"NCCL {'on' if kind['nccl'] else 'off'}")


def probe_caffe() -> dict[str, Any]:
    caffe = import_caffe()
    return {
        "version": caffe.__version__,
        "module": str(Path(caffe.__file__).parent),
        "prefix": str(caffe_prefix(caffe)),
        "build": build_info(caffe),
        "python_layer": "Python" in caffe.layer_type_list(),
        "layers": len(caffe.layer_type_list()),
        "nccl": bool(caffe.has_nccl()),
        **dnnl_facts(caffe),
    }


def _probe_lmdb_data_layer() -> str:
    """Write one 3x2x2 Datum to an LMDB, read it back through a Data layer."""
    import lmdb  # probed: doctor reports a missing library instead of failing to start

    caffe = import_caffe()
    from caffe.proto import caffe_pb2

    with tempfile.TemporaryDirectory() as tmp:
        db_path = os.path.join(tmp, "probe.lmdb")
        expected = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
        datum = caffe_pb2.Datum(channels=3, height=2, width=2, data=expected.tobytes())
        with lmdb.open(db_path, map_size=1 << 20) as env, env.begin(write=True) as txn:
            txn.put(b"00000000", datum.SerializeToString())
        net_spec = caffe.NetSpec()
        net_spec.data = caffe.layers.Data(source=db_path, backend=caffe.params.Data.LMDB, batch_size=1)
        proto_path = os.path.join(tmp, "probe.prototxt")
        Path(proto_path).write_text(str(net_spec.to_proto()))
        net = caffe.Net(proto_path, caffe.TEST)
        net.forward()
        read_back = net.blobs["data"].data.reshape(expected.shape)
        if not np.array_equal(read_back, expected):
            raise ValueError(f"the Data layer read {read_back.ravel()} for {expected.ravel()}")
        return "a record written with lmdb was read back by a Data layer"


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            versions[name] = "missing"
    return versions


def _caffe_cli() -> str:
    beside_python = Path(sys.executable).parent / "caffe"  # tools/install_caffe.sh links it there
    path = str(beside_python) if beside_python.exists() else shutil.which("caffe")
    if path is None:
        return "not found beside this Python nor on PATH"
    result = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return f"{path} ({(result.stdout or result.stderr).strip()})"


def _outcome(func: Any) -> tuple[bool, str]:
    try:
        return True, str(run_isolated(func, timeout=120))
    except CaffeError as exc:
        return False, str(exc).strip().splitlines()[-1]


def collect() -> dict[str, Any]:
    """Everything `mrfnet doctor` reports, as a JSON-able dict."""
    report: dict[str, Any] = {"executable": sys.executable, "libraries": _library_versions()}
    try:
        report["caffe"] = run_isolated(probe_caffe, timeout=120)
    except CaffeError as exc:
        report["caffe"] = {"error": str(exc)}
        return report
    report["caffe_cli"] = _caffe_cli()
    lmdb_ok, lmdb_detail = _outcome(_probe_lmdb_data_layer)
    report["lmdb"] = {"ok": lmdb_ok, "detail": lmdb_detail}
    report["caffe"]["kind"] = build_kind(report["caffe"]["build"])
    if report["caffe"]["kind"]["gpu"] is False:  # set_mode_gpu would only abort: no device to look for
        gpu_ok, gpu_detail = False, "CPU-only build: no GPU mode (tools/install_caffe.sh --gpu builds one)"
    else:
        gpu_ok, gpu_detail = _outcome(probe_gpu)
    report["gpu"] = {"ok": gpu_ok, "detail": gpu_detail}
    return report


def _describe_dnnl(caffe: dict[str, Any]) -> str:
    if not caffe.get("dnnl"):
        return "no (convolutions run Caffe's im2col + BLAS code)"
    bf16 = "native bfloat16: yes (--precision bf16 works)" if caffe["dnnl_native_bf16"] else \
        "native bfloat16: no (--precision bf16 is refused)"
    return f"yes, oneDNN {caffe['dnnl_version']}, the default in CPU mode; {bf16}"


def format_report(report: dict[str, Any]) -> str:
    caffe = report["caffe"]
    lines = [f"python executable: {report['executable']}"]
    if "error" in caffe:
        lines.append(f"caffe: NOT AVAILABLE\n{caffe['error']}")
    else:
        build = caffe["build"]
        lines += [
            f"caffe: {caffe['version']} at {caffe['module']}",
            f"caffe build: {build.get('source', 'not built by this project (no build-info.txt)')}",
        ]
        lines += [f"  {key}: {build[key]}" for key in ("key", "built", "patches", "gpu patches", "cmake")
                  if key in build]
        lines.append(f"  kind: {_describe_kind(caffe['kind'])}")
        lines += [f"  library {name}: {path}" for name, path in caffe["kind"].get("libraries", {}).items()]
        lines += [
            f"caffe CLI: {report['caffe_cli']}",
            f"python layers: {'yes' if caffe['python_layer'] else 'NO'} ({caffe['layers']} layer types)",
            f"LMDB data layer: {'yes' if report['lmdb']['ok'] else 'NO'} ({report['lmdb']['detail']})",
            f"GPU: {'yes' if report['gpu']['ok'] else 'no'} ({report['gpu']['detail']})",
            f"NCCL: {'yes' if caffe['nccl'] else 'no'}",
            f"DNNL engine: {_describe_dnnl(caffe)}",
        ]
    lines.append("libraries: " + ", ".join(f"{k} {v}" for k, v in report["libraries"].items()))
    return "\n".join(lines)
