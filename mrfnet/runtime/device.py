"""CPU or GPU mode for a Caffe process, set up in one place (inference, training workers, doctor)."""

from __future__ import annotations

from typing import Any

from mrfnet.runtime.caffe_env import import_caffe


def open_gpu(gpu: int) -> str:
    caffe = import_caffe()
    caffe.set_device(gpu)
    caffe.set_mode_gpu()
    return f"device {gpu} opened"


def set_mode(caffe: Any, gpu: int | None) -> None:
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()


def probe_gpu() -> str:
    caffe = import_caffe()
    caffe.set_device(0)
    caffe.set_mode_gpu()
    return "device 0 opened"
