"""Facts about this machine (CPU, memory, Caffe build) that timings and reports print beside their numbers."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mrfnet.runtime.caffe_env import build_info, import_caffe, run_isolated


def memory_available() -> int:
    """MemAvailable of /proc/meminfo in bytes (0 where unknown)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def default_max_memory_gb() -> float:
    """Half of the memory available now: the default ceiling for one measurement on a shared machine."""
    available = memory_available()
    return round(available / 2**30 / 2, 1) if available else 8.0


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown CPU" elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def machine_info(gpu: int | None = None) -> dict[str, Any]:
    """The machine the numbers come from: CPU model, cores, memory, Caffe version, BLAS and mode."""
    cpu = cpu_model()
    meminfo = Path("/proc/meminfo")
    total = 0
    if meminfo.is_file():
        total = next((int(line.split()[1]) * 1024 for line in meminfo.read_text().splitlines()
                      if line.startswith("MemTotal:")), 0)
    info = run_isolated(_caffe_facts, timeout=300)
    cmake = info["build"].get("cmake", "")
    blas = re.search(r"-DBLAS=(\S+)", cmake)
    cpu_only = "-DCPU_ONLY=ON" in cmake
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(total / 2**30, 1),
            "caffe": info["version"], "source": info["build"].get("source", "?"),
            "blas": blas.group(1) if blas else "?", "cpu_only_build": cpu_only,
            "mode": "CPU" if gpu is None else f"GPU {gpu}"}


def _caffe_facts() -> dict[str, Any]:
    caffe = import_caffe()
    return {"version": caffe.__version__, "build": build_info(caffe)}


def describe_machine(info: dict[str, Any]) -> str:
    return (f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; Caffe {info['caffe']} "
            f"({info['mode']} mode, BLAS {info['blas']})")


def status_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0
