"""Shared test fixtures. Caffe is real here: the test command builds it before pytest runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GLOG_minloglevel", "2")
sys.path.insert(0, str(Path(__file__).parent))  # Python layers defined for tests live beside them


@pytest.fixture(scope="session")
def caffe():
    from mrfnet.runtime.caffe_env import import_caffe

    module = import_caffe()
    module.set_mode_cpu()
    return module
