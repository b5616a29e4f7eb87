"""One writer per run folder (issue 24): a second `mrfnet train` on a folder in use is refused, naming the
first, and a copied run folder resumes from its own snapshots, never the original's.

Real processes on real Caffe: the first training runs as a child process (`python -m mrfnet.cli train`),
the second in this one; the lock dies with its holder (SIGKILL), after which the folder resumes.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_train import CROP, _has_rows, _options, dataset  # noqa: F401  (dataset: the module's fixture)

from mrfnet.cli import main
from mrfnet.runtime.folder_lock import FolderBusy, hold, holding, release
from mrfnet.train.driver import train
from mrfnet.train.run_setup import prepare_run

TRAIN = [sys.executable, "-m", "mrfnet.cli", "train"]


def _wait_for(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(0.1)
    assert condition()


def _holder(folder: Path) -> subprocess.Popen:
    """A process that holds ``folder``'s lock until killed (a `mrfnet train` stand-in where one is not needed)."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from mrfnet.runtime.folder_lock import hold
        hold(Path({str(folder)!r}))
        print("held", flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.mark.slow
def test_a_resume_of_a_folder_in_training_is_refused_naming_the_trainer(dataset, tmp_path, caplog):  # noqa: F811
    run_dir = prepare_run(_options(dataset, tmp_path / "run", iterations=100000, snapshot_every=4), ["test"])
    first = subprocess.Popen([*TRAIN, "--run-dir", str(run_dir), "--resume"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _has_rows(run_dir / "progress.csv"))
        options_before = (run_dir / "options.json").read_bytes()
        with caplog.at_level(logging.ERROR):
            assert main(["train", "--run-dir", str(run_dir), "--resume", "--data", str(dataset)]) == 1
        assert f"is in use by PID {first.pid} (" in caplog.text and "mrfnet.cli train" in caplog.text
        assert (run_dir / "options.json").read_bytes() == options_before  # refused before anything was written
        assert first.poll() is None  # the first one trains on
    finally:
        first.kill()  # the kernel releases its lock
        first.wait()
    release(hold(run_dir))  # free again: the kernel released the lock of the killed process


@pytest.mark.slow
def test_a_new_run_being_created_elsewhere_is_left_alone(dataset, tmp_path, caplog):  # noqa: F811
    run_dir = tmp_path / "run"
    partial = tmp_path / ".run.partial"
    partial.mkdir()
    (partial / "options.json").write_text("{}")  # the other process's half-made folder
    holder = _holder(partial)
    try:
        with caplog.at_level(logging.ERROR):
            assert main(["train", "--run-dir", str(run_dir), "--data", str(dataset), "--variant", "lwrefinenet",
                         "--batch-size", "2", "--crop-size", str(CROP), "--iterations", "2"]) == 1
        assert f".run.partial is in use by PID {holder.pid}" in caplog.text
        assert (partial / "options.json").read_text() == "{}" and not run_dir.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # its holder dead, the half-made folder is a crashed creation's: replaced by this run
    assert main(["train", "--run-dir", str(run_dir), "--data", str(dataset), "--variant", "lwrefinenet",
                 "--batch-size", "2", "--crop-size", str(CROP), "--iterations", "2", "--snapshot-every", "2"]) == 0
    assert (run_dir / "snapshots" / "lwrefinenet_iter_2.caffemodel").is_file() and not partial.exists()


def test_the_lock_is_one_per_process_and_given_back(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    key = hold(folder)
    assert hold(folder) == key  # held already by this process: the same lock
    holder = None
    try:
        release(key)
        with holding(folder):
            pass
        holder = _holder(folder)
        with pytest.raises(FolderBusy, match=f"PID {holder.pid}"):
            hold(folder)
    finally:
        if holder:
            holder.kill()
            holder.wait()


@pytest.mark.slow
def test_a_copied_run_folder_resumes_from_its_own_snapshots(dataset, tmp_path, caplog):  # noqa: F811
    """Caffe's solverstate names its caffemodel by an absolute path, the original folder's in a copy: the
    copy's own caffemodel is read, and a damaged one is skipped, never replaced by the original's."""
    original = prepare_run(_options(dataset, tmp_path / "run", iterations=8, snapshot_every=4), ["test"])
    assert train(original).iteration == 8
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    (copy / "snapshots" / "lwrefinenet_iter_8.caffemodel").write_bytes(b"")  # the copy's newest, damaged
    caplog.set_level(logging.WARNING)
    result = train(copy, resume=True)
    assert "skipping snapshot lwrefinenet_iter_8.solverstate" in caplog.text  # not resumed from the original's
    assert result.iteration == 8 and (copy / "snapshots" / "lwrefinenet_iter_8.caffemodel").stat().st_size > 0


def test_a_second_main_job_on_one_work_folder_is_refused(tmp_path, caplog):
    """`mrfnet reproduce` holds its work folder (data and runs) for the whole job."""
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    holder = _holder(work_dir)
    try:
        with caplog.at_level(logging.ERROR):
            assert main(["reproduce", "--quick", "--work-dir", str(work_dir), "--reports", str(tmp_path)]) == 1
        assert f"{work_dir} is in use by PID {holder.pid} (" in caplog.text
        assert sorted(work_dir.iterdir()) == [] and not (tmp_path / "quick").exists()
    finally:
        holder.kill()
        holder.wait()
