"""Caffe work in a child process: results come back, aborts and exceptions become CaffeError."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mrfnet.runtime.caffe_env import CaffeError, run_isolated

from smoke import train_tiny_net


def load_net(path: str) -> list[str]:
    from mrfnet.runtime.caffe_env import import_caffe

    caffe = import_caffe()
    return list(caffe.Net(path, caffe.TEST).blobs)


def raise_value_error() -> None:
    raise ValueError("bad option")


def test_a_result_comes_back(tmp_path):
    proto = tmp_path / "ok.prototxt"
    proto.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }')
    assert run_isolated(load_net, str(proto), timeout=120) == ["x"]


def test_a_caffe_abort_becomes_a_caffe_error_with_glogs_message(tmp_path):
    proto = tmp_path / "bad.prototxt"
    proto.write_text('layer { name: "conv" type: "Convolution" bottom: "missing" top: "y" }')
    with pytest.raises(CaffeError, match=r"(?s)Caffe aborted \(signal SIGABRT\).*Unknown bottom blob 'missing'"):
        run_isolated(load_net, str(proto), timeout=120)


def test_a_missing_prototxt_is_reported(tmp_path):
    with pytest.raises(CaffeError, match="nothing.prototxt"):
        run_isolated(load_net, str(tmp_path / "nothing.prototxt"), timeout=120)


def test_a_python_exception_in_the_child_is_reported():
    with pytest.raises(CaffeError, match="ValueError: bad option"):
        run_isolated(raise_value_error, timeout=60)


def test_the_tiny_training_run_lowers_the_loss():
    losses = run_isolated(train_tiny_net, iterations=30, seed=0, timeout=300)
    assert len(losses) == 30
    assert losses[-1] < 0.75 * losses[0]


def test_doctor_reports_a_working_cpu_build():
    result = subprocess.run([sys.executable, "-m", "mrfnet.cli", "doctor", "--json"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["caffe"]["python_layer"] is True
    assert report["lmdb"]["ok"] is True
    assert "1.0.0" in report["caffe_cli"]
    assert report["gpu"]["ok"] is False and "CPU-only" in report["gpu"]["detail"]


def test_the_cli_rejects_an_unknown_command():
    result = subprocess.run([sys.executable, "-m", "mrfnet.cli", "no-such-command"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
