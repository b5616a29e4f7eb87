"""Caffe's thread count on a shared machine (mrfnet.runtime.threads): the free cores when other processes keep
some busy, every core on a quiet machine, and what the user sets always wins."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from mrfnet.runtime.errors import InvalidValue
from mrfnet.runtime.threads import busy_cores_elsewhere, choose_threads

CORES = len(os.sched_getaffinity(0))


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_what_the_user_sets_wins():
    assert choose_threads({"OMP_NUM_THREADS": "3", "MRFNET_THREADS": "1"}) is None
    environ = {"MRFNET_THREADS": "1"}
    assert choose_threads(environ) == 1
    assert environ == {"MRFNET_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    environ = {"MRFNET_THREADS": "all"}
    assert choose_threads(environ) is None and environ == {"MRFNET_THREADS": "all"}
    with pytest.raises(InvalidValue, match="MRFNET_THREADS='some': give auto, all or a number"):
        choose_threads({"MRFNET_THREADS": "some"})


@pytest.mark.skipif(CORES < 2, reason="one core: nothing to share")
def test_a_core_kept_busy_elsewhere_is_left_to_its_process():
    spinner = multiprocessing.get_context("spawn").Process(target=_spin, args=(30,))
    spinner.start()
    try:
        time.sleep(1)  # the spinner is up
        assert busy_cores_elsewhere() >= 0.5
        environ = {"MRFNET_THREADS": "auto"}
        threads = choose_threads(environ)
        assert threads is not None and 1 <= threads < CORES
        assert environ["OMP_NUM_THREADS"] == environ["OPENBLAS_NUM_THREADS"] == str(threads)
    finally:
        spinner.terminate()
        spinner.join()


def test_only_the_commands_that_compute_measure_the_free_cores(monkeypatch, tmp_path):
    """The quarter-second measurement is for commands that run Caffe; reports, tables, logs and solver files
    start without it."""
    from mrfnet import cli

    measured = []
    monkeypatch.setattr(cli, "choose_threads", lambda environ: measured.append(True))
    assert cli.main(["solver", "--variant", "mrfnet", "--out", str(tmp_path / "solver.prototxt")]) == 0
    assert cli.main(["report", str(tmp_path)]) == 1  # no results.json there: a one-line error, still not measured
    assert measured == []
    assert cli.main(["data-prep", "--source", "gopro"]) == 1  # a computing command measures first (no --root)
    assert measured == [True]
