"""Shared test fixtures. Caffe is real here: the test command builds it before pytest runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GLOG_minloglevel", "2")
# every core, not the free ones (mrfnet.runtime.threads): results that depend on the thread count (oneDNN's
# reductions) must not change with what else runs on the machine while the tests do
os.environ.setdefault("MRFNET_THREADS", "all")
sys.path.insert(0, str(Path(__file__).parent))  # Python layers defined for tests live beside them


@pytest.fixture(scope="session")
def caffe():
    from mrfnet.runtime.caffe_env import import_caffe

    module = import_caffe()
    module.set_mode_cpu()
    return module
