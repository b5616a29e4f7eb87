"""How many threads Caffe's OpenMP and OpenBLAS get: every core on a quiet machine, the free ones on a shared one.

On the 2-core development machine, with another process keeping one core busy, MRFNet's training step
(batch 4 x 64x64) took 0.665 s with two threads against 0.174 s on the quiet machine, and 0.300 s with
one thread, which is what one free core gives (`tools/bench_shared_cpu.py`, docs/architecture.md,
"Sharing the CPU"): every OpenMP region waits for the thread whose core is shared. So when a command
starts, the cores other processes keep busy are measured (/proc/stat over a quarter of a second) and
the rest are used. The choice is made once, at the start: a load that comes later is not followed.

``MRFNET_THREADS`` overrides it: ``auto`` (the default), ``all`` (every core the process may use, no
measuring) or a number; ``OMP_NUM_THREADS`` set by the user wins over all of them. A run's numbers
depend on its thread count (oneDNN splits its reductions by thread), so a resume that must be
bit-exact keeps the thread count fixed (``MRFNET_THREADS=all``, or ``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import MutableMapping
from pathlib import Path

from mrfnet.runtime.errors import InvalidValue

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.25
BUSY_CORE = 0.5  # a core counts as taken when other processes use at least this much of one
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together, from /proc/stat's first line."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def _own_ticks() -> int:
    """utime + stime of this process and its waited-for children, in jiffies."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15])


def busy_cores_elsewhere(seconds: float = SAMPLE_SECONDS) -> float:
    """How many of the cores other processes kept busy over ``seconds`` (this process not counted)."""
    busy0, total0 = _cpu_ticks()
    own0 = _own_ticks()
    time.sleep(seconds)
    busy1, total1 = _cpu_ticks()
    own1 = _own_ticks()
    cores = os.cpu_count() or 1
    if total1 <= total0:
        return 0.0
    return max(0.0, (busy1 - busy0 - (own1 - own0)) / (total1 - total0) * cores)


def choose_threads(environ: MutableMapping[str, str]) -> int | None:
    """Set OMP_NUM_THREADS and OPENBLAS_NUM_THREADS in ``environ`` (before Caffe loads) as MRFNET_THREADS says;
    the thread count set, or None where the user set them or the machine is quiet (every core is used)."""
    if "OMP_NUM_THREADS" in environ:
        return None
    setting = environ.get("MRFNET_THREADS", "auto").strip().lower()
    allowed = len(os.sched_getaffinity(0))
    if setting == "all":
        return None
    if setting.isdigit() and int(setting) >= 1:
        threads = min(int(setting), allowed)
    elif setting == "auto":
        busy = busy_cores_elsewhere()
        taken = int(busy + 1 - BUSY_CORE)  # a core counts as taken from BUSY_CORE of it on
        if taken < 1:
            return None
        threads = max(1, allowed - taken)
        log.info("%.1f of this machine's %d cores are busy with other work: Caffe uses %d thread(s) (set "
                 "MRFNET_THREADS=all or OMP_NUM_THREADS to choose)", busy, allowed, threads)
    else:
        raise InvalidValue(f"MRFNET_THREADS={setting!r}: give auto, all or a number of threads")
    for name in THREAD_VARIABLES:
        environ.setdefault(name, str(threads))
    return threads
