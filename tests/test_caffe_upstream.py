"""Caffe's own Python unit tests (python/caffe/test of the built source) against the installed build."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.mark.slow  # Caffe's own suite in a child process
def test_caffes_own_python_tests_pass(caffe):
    from mrfnet.runtime.caffe_env import caffe_prefix

    test_dir = caffe_prefix(caffe) / "share" / "caffe-tests" / "python" / "caffe" / "test"
    assert (test_dir / "test_net.py").is_file(), f"upstream tests not installed in {test_dir}"
    result = subprocess.run([sys.executable, "-m", "unittest", "discover", "-s", str(test_dir)],
                            capture_output=True, text=True, check=False)
    summary = re.search(r"^Ran (\d+) tests?", result.stderr, re.MULTILINE)
    print(result.stderr[-2000:])
    assert result.returncode == 0, result.stderr[-4000:]
    assert summary and int(summary.group(1)) >= 52
    assert "skipped" not in result.stderr.splitlines()[-1]
