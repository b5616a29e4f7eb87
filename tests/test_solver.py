"""Solver generation: the paper's epoch arithmetic, Adam fields, and the committed examples."""

from __future__ import annotations

import argparse

import pytest
from google.protobuf import text_format

from mrfnet.commands import solver as solver_module
from mrfnet.train.schedule import Schedule, write_solver

from conftest import REPO


def test_gopro_on_four_gpus_matches_the_papers_schedule():
    schedule = Schedule(records=2103, batch_size=16, gpus=4, epochs=50)
    assert schedule.batch_per_gpu == 4
    assert schedule.iterations_per_epoch == 132  # ceil(2103 / 16): one iteration uses all four GPUs
    assert schedule.stepsize == 1320  # halve every 10 epochs
    assert schedule.max_iter == 6600  # 50 epochs
    assert schedule.snapshot == 132


def test_the_epoch_does_not_depend_on_the_gpu_count():
    one, four = Schedule(records=6471, gpus=1, epochs=70), Schedule(records=6471, gpus=4, epochs=70)
    assert one.max_iter == four.max_iter == 70 * 405
    assert (one.batch_per_gpu, four.batch_per_gpu) == (16, 4)


def test_test_iter_covers_the_val_set_once():
    assert Schedule(records=100, batch_size=16, gpus=4, val_records=10).test_iter == 3  # ceil(10 / 4)
    assert Schedule(records=100, val_records=0).test_iter == 0


@pytest.mark.parametrize("kwargs", [dict(records=0), dict(records=10, batch_size=16, gpus=3),
                                    dict(records=10, epochs=0)])
def test_impossible_schedules_are_refused(kwargs):
    with pytest.raises(ValueError):
        Schedule(**kwargs)


def test_the_written_solver_has_adam_and_the_step_policy(caffe, tmp_path):
    from caffe.proto import caffe_pb2

    path = write_solver(tmp_path / "s.prototxt", Schedule(records=160, batch_size=16, epochs=30),
                        net="net.prototxt", snapshot_prefix="snap/m", seed=7)
    param = text_format.Parse(path.read_text(), caffe_pb2.SolverParameter())
    assert param.type == "Adam"
    assert (param.momentum, param.momentum2, param.base_lr) == pytest.approx((0.9, 0.999, 1e-4))  # float32 fields
    assert (param.lr_policy, param.gamma, param.stepsize, param.max_iter) == ("step", 0.5, 100, 300)
    assert param.random_seed == 7 and param.snapshot == 10
    assert not param.test_iter, "no val set: no testing"


@pytest.mark.parametrize("dataset", ["gopro", "visdrone"])
def test_committed_paper_solvers_match_the_generator(tmp_path, dataset):
    out = tmp_path / f"mrfnet_{dataset}.prototxt"
    args = argparse.Namespace(variant="mrfnet", dataset=dataset, records=None, train_lmdb=None, val_records=0,
                              batch_size=16, gpus=4, epochs=None, base_lr=1e-4, seed=0, net=None, out=out)
    assert solver_module.run(args) == 0
    committed = REPO / "solvers" / out.name
    assert committed.read_text() == out.read_text(), f"regenerate with: mrfnet solver --dataset {dataset} --gpus 4"
