"""plot-log on a real Caffe log, written by the `caffe train` CLI on a tiny DummyData net."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mrfnet.train.caffe_log import plot_run


@pytest.fixture(scope="module")
def caffe_log(tmp_path_factory) -> Path:
    from mrfnet.runtime.caffe_env import import_caffe

    caffe = import_caffe()
    L = caffe.layers
    n = caffe.NetSpec()
    filler = dict(type="gaussian", std=1.0)
    n.data, n.target = L.DummyData(ntop=2, shape=[dict(dim=[2, 3, 8, 8])] * 2, data_filler=[filler, filler])
    n.conv = L.Convolution(n.data, num_output=3, kernel_size=3, pad=1, weight_filler=dict(type="msra"))
    n.loss_full = L.EuclideanLoss(n.conv, n.target)
    run = tmp_path_factory.mktemp("run")
    (run / "net.prototxt").write_text(str(n.to_proto()))
    (run / "solver.prototxt").write_text(
        'net: "net.prototxt"\ntype: "Adam"\nbase_lr: 0.01\nlr_policy: "step"\ngamma: 0.5\nstepsize: 4\n'
        "max_iter: 8\ndisplay: 2\ntest_iter: 1\ntest_interval: 4\nsnapshot: 0\nsnapshot_after_train: false\n"
        "solver_mode: CPU\n")
    caffe_cli = Path(sys.executable).parent / "caffe"
    with (run / "caffe.log").open("w") as log:
        subprocess.run([str(caffe_cli), "train", "--solver=solver.prototxt"], cwd=run, stderr=log, check=True,
                       env={**os.environ, "GLOG_minloglevel": "0", "GLOG_logtostderr": "1"})
    return run


def test_a_real_caffe_log_becomes_csv_and_png(caffe_log):
    figure = plot_run(caffe_log)
    assert figure.is_file() and figure.stat().st_size > 10_000
    train = list(csv.DictReader((caffe_log / "train.csv").open()))
    assert [int(r["iteration"]) for r in train] == [0, 2, 4, 6, 8]  # Solve() logs the final iteration too
    assert all(float(r["loss"]) > 0 for r in train)
    assert [float(r["lr"]) for r in train[:4]] == [0.01, 0.01, 0.005, 0.005]
    test = list(csv.DictReader((caffe_log / "test.csv").open()))
    assert [int(r["iteration"]) for r in test] == [0, 4, 8]  # test_initialization defaults to true


def test_a_log_without_iterations_is_refused(tmp_path):
    (tmp_path / "caffe.log").write_text("I1124 net.cpp:100] nothing here\n")
    with pytest.raises(ValueError, match="no 'Iteration N, loss = X' lines"):
        plot_run(tmp_path)


def test_a_missing_log_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        plot_run(tmp_path / "nothing")
