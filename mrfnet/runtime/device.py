"""CPU or GPU mode for a Caffe process, set up in one place (inference, training workers, doctor)."""

from __future__ import annotations

from typing import Any

from mrfnet.runtime.caffe_env import import_caffe


def set_mode(caffe: Any, gpu: int | None) -> None:
    """CPU mode, or GPU mode on device ``gpu`` (the device first: Caffe opens it when the mode is set)."""
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()


def open_gpu(gpu: int) -> str:
    """Open device ``gpu`` in this process (run it in a child: a missing device aborts Caffe); a line for logs."""
    set_mode(import_caffe(), gpu)
    return f"device {gpu} opened"


def probe_gpu() -> str:
    """Whether this Caffe can open a GPU at all (`mrfnet doctor`, and train before it spawns GPU solvers)."""
    return open_gpu(0)
