"""Whether a training batch fits: Caffe's blob size limit and this machine's memory, checked before a run exists.

Caffe aborts on a blob of more than INT_MAX values (``F blob.cpp:34``): refused here in one line, naming
the largest batch that fits. A batch whose forward and backward may need more memory than the machine
has (mrfnet.infer.memory's estimate) is warned about: it would be killed part-way through its first step.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from mrfnet.infer.memory import memory_estimate
from mrfnet.infer.weights import read_prototxt
from mrfnet.runtime.caffe_env import import_caffe, run_isolated
from mrfnet.runtime.errors import InvalidValue
from mrfnet.runtime.run_files import DEPLOY
from netgen import build_deploy

log = logging.getLogger(__name__)

CAFFE_BLOB_LIMIT = 2**31 - 1  # Blob::Reshape's CHECK_LE(count_, INT_MAX)


def _one_image(deploy: str) -> dict[str, int]:
    """In a child: the largest blob and the training memory of the net for one image."""
    caffe = import_caffe()
    caffe.set_mode_cpu()
    net = caffe.Net(deploy, caffe.TEST)
    estimate = memory_estimate(net, read_prototxt(deploy))
    return {"largest_blob": max(blob.count for blob in net.blobs.values()),
            "training_bytes": estimate.training, "parameter_bytes": estimate.parameters}


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_batch(variant: str, crop_size: int, batch_per_solver: int, *, on_cpu: bool = True) -> None:
    """Refuse a batch (per solver) that Caffe cannot hold in one blob; warn (``on_cpu``) of one too large for
    this machine's memory."""
    with tempfile.TemporaryDirectory(prefix="mrfnet-batch-") as tmp:
        deploy = Path(tmp) / DEPLOY
        deploy.write_text(str(build_deploy(variant, height=crop_size, width=crop_size)))
        one: dict[str, Any] = run_isolated(_one_image, str(deploy), timeout=300)
    largest = CAFFE_BLOB_LIMIT // one["largest_blob"]
    if batch_per_solver > largest:
        raise InvalidValue(f"a batch of {batch_per_solver} {crop_size}x{crop_size} crops per solver makes a blob of "
                         f"{batch_per_solver * one['largest_blob']:,} values, over Caffe's limit of 2^31-1: at most "
                         f"{largest} per solver fit (lower --batch-size or --crop-size)")
    if not on_cpu:
        return
    per_image = one["training_bytes"] - 2 * one["parameter_bytes"]  # the parameters and their diffs once
    need = batch_per_solver * per_image + 4 * one["parameter_bytes"]
    if need > physical_memory():  # an estimate (mrfnet.infer.memory), so said, not refused
        fits = max(0, math.floor((physical_memory() - 4 * one["parameter_bytes"]) / per_image))
        log.warning("a batch of %d %dx%d crops per solver may need about %.0f GB to train, more than this machine's "
                    "%.0f GB (about %d would fit): if the first step is killed, lower --batch-size or --crop-size",
                    batch_per_solver, crop_size, crop_size, need / 2**30, physical_memory() / 2**30, fits)
