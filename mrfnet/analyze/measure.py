"""One measurement in a child process: a forward pass or a training step's seconds and peak RSS, or `caffe time`."""

from __future__ import annotations

import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.atomic import write_text_atomic
from mrfnet.export.exporter import caffe_params
from mrfnet.export.onnx_graph import caffe_to_onnx
from mrfnet.export.onnx_model import OnnxModel
from mrfnet.infer.memory import memory_estimate
from mrfnet.infer.tiling import caffe_forward, predict_with
from mrfnet.infer.weights import read_prototxt
from mrfnet.runtime.caffe_env import import_caffe
from mrfnet.runtime.device import set_mode
from mrfnet.runtime.errors import InvalidValue
from mrfnet.runtime.machine import status_kb
from netgen import build_deploy
from netgen.sizes import size_label

log = logging.getLogger(__name__)


MB = 2**20


HEADROOM_BYTES = 2 * 2**30  # address space allowed above the counted memory before a child is stopped


CHILD_TIMEOUT_S = 3600.0


FORWARD = re.compile(r"Average Forward pass: ([\d.eE+-]+) ms")


FORWARD_BACKWARD = re.compile(r"Average Forward-Backward: ([\d.eE+-]+) ms")


def _limit_address_space(extra_bytes: int) -> None:
    """Cap this process's address space at its current size + ``extra_bytes``: an underestimate fails
    with an allocation error in this process instead of driving a shared machine out of memory."""
    limit = status_kb("VmSize") * 1024 + extra_bytes
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or limit < hard:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def measure_in_child(prototxt: str, *, repeats: int, warmup: int, max_bytes: int, train: bool, overlap: int,
             gpu: int | None, image_size: tuple[int, int] | None = None, count_only: bool = False,
             engine: str = "caffe") -> dict[str, Any]:
    """In a child: build the net, count its memory, and (if it fits) time it and read the peak RSS.

    ``engine`` "onnxruntime" times the net's ONNX export (its filler weights) in ONNX Runtime instead,
    for inference; the memory counted stays Caffe's, which is what picks the tiles for both engines.

    With ``image_size`` the prototxt's input is one tile, and what is timed is tiled inference of a
    random image of that (height, width); a warm-up is then one tile's forward pass, which is all
    a warm-up does (Caffe allocates on the first pass at a shape). (A net is never built large and
    reshaped smaller: Caffe keeps a blob's largest size and would allocate it on first use.)
    ``count_only``: count the memory and stop (nothing is run).
    """
    caffe = import_caffe()

    set_mode(caffe, gpu)
    rss_before = status_kb("VmRSS") * 1024
    net = caffe.Net(prototxt, caffe.TEST)
    estimate = memory_estimate(net, read_prototxt(prototxt))
    needed = estimate.training if train else estimate.total
    result: dict[str, Any] = {"estimate": asdict(estimate), "needed": needed}
    if count_only:
        result["skipped"] = "counted only"
        return result
    if needed > max_bytes:
        result["skipped"] = f"needs {needed / 2**30:.1f} GB counted, above the {max_bytes / 2**30:.1f} GB limit"
        return result
    _limit_address_space(needed + HEADROOM_BYTES)
    if engine == "onnxruntime" and train:
        raise InvalidValue("ONNX Runtime runs inference only: training is timed in Caffe")
    run, warm_up = _workload(net, prototxt, train=train, overlap=overlap, image_size=image_size, engine=engine,
                             result=result)
    for _ in range(warmup):
        warm_up()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    result["seconds"] = times
    result["peak_rss"] = status_kb("VmHWM") * 1024
    result["rss_above_start"] = result["peak_rss"] - rss_before
    return result


def _workload(net: Any, prototxt: str, *, train: bool, overlap: int, image_size: tuple[int, int] | None,
              engine: str, result: dict[str, Any]) -> tuple[Callable[[], None], Callable[[], None]]:
    """(what is timed, its warm-up) for ``measure_in_child``: tiled inference of an image, the ONNX export's
    forward, or Caffe's forward (and backward when ``train``), on random inputs."""
    shape = net.blobs["blur"].data.shape
    rng = np.random.default_rng(0)
    outputs = list(net.outputs)
    exported = None
    if engine == "onnxruntime":
        exported = OnnxModel(caffe_to_onnx(read_prototxt(prototxt), caffe_params(net), outputs=outputs))
    if image_size is not None:
        forward = exported.forward if exported is not None else caffe_forward(net)
        image = rng.integers(0, 256, (*image_size, 3), dtype=np.uint8)
        tile = rng.random(shape[1:], dtype=np.float32)
        result["tile"] = size_label(shape[2], shape[3])
        return (lambda: predict_with(forward, image, tile=(shape[2], shape[3]), overlap=overlap),
                lambda: forward(tile))
    if exported is not None:
        feed = {"blur": rng.random(shape, dtype=np.float32)}

        def run_exported() -> None:
            exported.session.run(None, feed)  # every output, read back as numpy arrays

        return run_exported, run_exported
    net.blobs["blur"].data[...] = rng.random(shape, dtype=np.float32)

    def run_caffe() -> None:
        net.forward()
        if train:
            for name in outputs:
                net.blobs[name].diff[...] = 1e-3
            net.backward()
        for name in outputs:
            np.array(net.blobs[name].data)  # read the outputs back, as a caller would

    return run_caffe, run_caffe


def caffe_cli() -> str | None:
    """The `caffe` tool beside this Python (tools/install_caffe.sh links it there), or on PATH."""
    beside = Path(sys.executable).parent / "caffe"
    return str(beside) if beside.is_file() else shutil.which("caffe")


def parse_caffe_time(text: str) -> dict[str, float]:
    """Milliseconds from `caffe time`'s log: forward (per pass) and forward_backward (per iteration)."""
    found = {}
    for key, pattern in (("forward_ms", FORWARD), ("forward_backward_ms", FORWARD_BACKWARD)):
        matches = pattern.findall(text)
        if matches:
            found[key] = float(matches[-1])
    return found


def run_caffe_time(prototxt: str, *, iterations: int, max_bytes: int, gpu: int | None = None,
                   timeout: float = CHILD_TIMEOUT_S) -> dict[str, Any]:
    """Run `caffe time` on ``prototxt``; parsed times, peak RSS (wait4) and the command, or an error."""
    tool = caffe_cli()
    if tool is None:
        return {"error": "no caffe tool beside this Python or on PATH"}
    command = [tool, "time", f"-model={prototxt}", f"-iterations={iterations}"]
    if gpu is not None:
        command.append(f"-gpu={gpu}")
    # idle OpenMP threads spin briefly, then sleep, as pycaffe has them (docs/architecture.md, "Caffe's CPU threads")
    spin = {} if "OMP_WAIT_POLICY" in os.environ else {"GOMP_SPINCOUNT": "20000"}
    env = {**spin, **os.environ, "GLOG_minloglevel": "0", "GLOG_logtostderr": "1"}

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes + HEADROOM_BYTES, resource.RLIM_INFINITY))

    with tempfile.TemporaryFile() as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, preexec_fn=limit)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                _, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        log_file.seek(0)
        text = log_file.read().decode(errors="replace")
    result: dict[str, Any] = {"command": " ".join(command), "peak_rss": usage.ru_maxrss * 1024,
                              **parse_caffe_time(text)}
    if process.returncode != 0 or "forward_ms" not in result:
        tail = [line for line in text.splitlines() if line[:1] in "EF"][-3:] or text.splitlines()[-3:]
        result["error"] = f"caffe time exited with {process.returncode}: " + " | ".join(tail)
    return result


def write_deploy(variant: str, height: int, width: int, batch: int, folder: Path, train: bool) -> str:
    """A deploy net of ``variant`` at this size in ``folder``; ``train``: with force_backward, for a backward pass."""

    net = build_deploy(variant, height=height, width=width, batch_size=batch, share_blobs=not train)
    net.force_backward = train
    path = folder / f"{variant}_{width}x{height}_b{batch}{'_train' if train else ''}.prototxt"
    write_text_atomic(path, str(net))
    return str(path)
