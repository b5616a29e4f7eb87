"""`mrfnet train` on real Caffe: loss falls, snapshots, exact resume, Ctrl-C, NaN stop, refusals."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from mrfnet.evaluate.testsets import LmdbTestSet
from mrfnet.infer.weights import nonfinite_values, read_caffemodel
from mrfnet.train.driver import train
from mrfnet.train.loss_schedule import loss_schedule
from mrfnet.train.options import TrainOptions
from mrfnet.train.run_setup import prepare_run
from mrfnet.train.snapshots import TrainingError
from netgen import VARIANTS, build_deploy
from tests.scoring_helpers import make_pair_lmdb

SIDE = 24
CROP = 16


def _pairs(count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Smooth random colour images and their 5x5 box-blurred versions."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        sharp = cv2.resize(small, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST)
        blur = cv2.blur(sharp, (5, 5), borderType=cv2.BORDER_REPLICATE)
        pairs.append((blur, sharp))
    return pairs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_pair_lmdb(root / "train_lmdb", _pairs(8, seed=0))
    make_pair_lmdb(root / "val_lmdb", _pairs(2, seed=1))
    return root


def _options(dataset: Path, run_dir: Path, **overrides) -> TrainOptions:
    settings = dict(variant="lwrefinenet", data=str(dataset), run_dir=str(run_dir), batch_size=2, crop_size=CROP,
                    iterations=8, base_lr=1e-3, snapshot_every=4, loss_schedule="uniform")
    settings.update(overrides)
    return TrainOptions(**settings)


def _progress(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "progress.csv").open() as file:
        return list(csv.DictReader(file))


def _has_rows(path: Path) -> bool:
    return path.is_file() and len(path.read_text().splitlines()) > 1


def _weights(caffe, run_dir: Path, iteration: int, variant: str = "lwrefinenet") -> dict[str, np.ndarray]:
    net = caffe.Net(str(run_dir / "deploy.prototxt"), str(run_dir / "snapshots" / f"{variant}_iter_{iteration}"
                                                             ".caffemodel"), caffe.TEST)
    return {f"{name}/{i}": blob.data.copy() for name, blobs in net.params.items() for i, blob in enumerate(blobs)}


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_loss_falls_for_every_variant(dataset, tmp_path, variant):
    run_dir = prepare_run(_options(dataset, tmp_path / "run", variant=variant, iterations=30, snapshot_every=30,
                                   batch_size=4), ["test"])
    result = train(run_dir)
    assert result.status == "finished" and result.iteration == 30
    total = [sum(float(row[f"loss_r{k}"]) for k in range(1, 5)) for row in _progress(run_dir)]
    assert len(total) == 30
    # The nets start as the identity and their output convolutions learn at a tenth of the rate
    # (netgen.network.OUTPUT_LR_MULT), so 30 steps take the loss down by ~15-20% here.
    assert np.mean(total[-5:]) < 0.9 * np.mean(total[:5])
    assert result.snapshot == run_dir / "snapshots" / f"{variant}_iter_30.caffemodel"


@pytest.mark.slow
def test_the_run_folder_holds_everything_and_snapshots_load(caffe, dataset, tmp_path):
    run_dir = prepare_run(_options(dataset, tmp_path / "run"), ["mrfnet", "train", "--x"])
    train(run_dir)
    for name in ("options.json", "command.txt", "train_val.prototxt", "deploy.prototxt", "solver.prototxt",
                 "caffe.log", "progress.csv"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "options.json").read_text())["variant"] == "lwrefinenet"
    snapshots = sorted(p.name for p in (run_dir / "snapshots").iterdir())
    assert snapshots == ["lwrefinenet_iter_4.caffemodel", "lwrefinenet_iter_4.solverstate",
                         "lwrefinenet_iter_8.caffemodel", "lwrefinenet_iter_8.solverstate"]
    first, last = _weights(caffe, run_dir, 4), _weights(caffe, run_dir, 8)
    assert any(not np.array_equal(first[k], last[k]) for k in first)


@pytest.mark.slow
def test_resuming_gives_exactly_the_uninterrupted_weights(caffe, dataset, tmp_path):
    straight = prepare_run(_options(dataset, tmp_path / "straight"), ["test"])
    train(straight)
    split = prepare_run(_options(dataset, tmp_path / "split", iterations=4), ["test"])
    train(split)
    # The same run continued: only max_iter differs, as when a run is stopped at iteration 4.
    solver = (split / "solver.prototxt").read_text().replace("max_iter: 4", "max_iter: 8")
    (split / "solver.prototxt").write_text(solver)
    result = train(split, resume=True)
    assert result.iteration == 8
    expected, got = _weights(caffe, straight, 8), _weights(caffe, split, 8)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    rows = _progress(split)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 9))


@pytest.mark.slow
def test_a_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_snapshot(dataset, tmp_path):
    run_dir = prepare_run(_options(dataset, tmp_path / "run", base_lr=1e12, iterations=40, snapshot_every=1),
                          ["test"])
    with pytest.raises(TrainingError, match="non-finite") as info:
        train(run_dir)
    assert "last good snapshot" in str(info.value)
    snapshots = list((run_dir / "snapshots").glob("*.caffemodel"))
    assert snapshots, "the snapshots taken before the loss blew up are kept"
    named = str(info.value).split("last good snapshot: ")[1].split(". ")[0]
    if named != "none yet":  # the weights can turn NaN a step before the loss does: never name such a snapshot
        assert not nonfinite_values(read_caffemodel(named)), named


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGUSR1])
def test_a_stop_signal_snapshots_and_exits_130(dataset, tmp_path, stop):
    """Ctrl-C, and SIGUSR1 (a cluster's warning before its time limit: sbatch --signal=USR1@120), without mpirun."""
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "mrfnet.cli", "train", "--run-dir", str(run_dir), "--data", str(dataset),
               "--variant", "lwrefinenet", "--batch-size", "2", "--crop-size", str(CROP), "--iterations", "100000",
               "--snapshot-every", "100000", "--loss-schedule", "uniform"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _has_rows(run_dir / "progress.csv"):
        time.sleep(0.2)  # stop it mid-run: after its first iteration is on record
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    rows = _progress(run_dir)
    snapshot = run_dir / "snapshots" / f"lwrefinenet_iter_{rows[-1]['iteration']}.caffemodel"
    assert snapshot.is_file(), sorted(os.listdir(run_dir / "snapshots"))


def test_sigint_while_the_solver_starts_up_still_exits_130(dataset, tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "mrfnet.cli", "train", "--run-dir", str(run_dir), "--data", str(dataset),
               "--variant", "lwrefinenet", "--batch-size", "2", "--crop-size", str(CROP), "--iterations", "100000",
               "--snapshot-every", "100000"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run_dir / "progress.csv").is_file():
        time.sleep(0.05)  # the parent handles signals from here on; the solver child is still importing
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_the_edge_branch_trains_and_its_losses_are_logged(dataset, tmp_path):
    run_dir = prepare_run(_options(dataset, tmp_path / "run", edge=True, iterations=6, snapshot_every=6), ["test"])
    result = train(run_dir)
    assert result.status == "finished"
    rows = _progress(run_dir)
    assert all(float(row["loss_edge"]) > 0 and np.isfinite(float(row["loss_edge_adv"])) for row in rows)
    assert "edge_gt" in (run_dir / "train_val.prototxt").read_text()
    assert "edge" not in (run_dir / "deploy.prototxt").read_text()


def test_refusals(dataset, tmp_path):
    run_dir = prepare_run(_options(dataset, tmp_path / "run"), ["test"])
    with pytest.raises(FileExistsError, match="--resume"):
        prepare_run(_options(dataset, run_dir), ["test"])
    with pytest.raises(FileNotFoundError, match="data-prep"):
        prepare_run(_options(tmp_path / "nothing", tmp_path / "run2"), ["test"])
    with pytest.raises(FileNotFoundError, match="--weights"):
        prepare_run(_options(dataset, tmp_path / "run3", weights=str(tmp_path / "missing.caffemodel")), ["test"])
    with pytest.raises(ValueError, match="--crop-size 64 is larger"):
        prepare_run(_options(dataset, tmp_path / "run5", crop_size=64), ["test"])
    with pytest.raises(ValueError, match="loss schedule"):
        prepare_run(_options(dataset, tmp_path / "run4", loss_schedule="sideways"), ["test"])
    assert not (tmp_path / "run2").exists() and not (tmp_path / "run3").exists() and not (tmp_path / "run4").exists()
    assert not (tmp_path / "run5").exists()


@pytest.mark.slow
def test_resume_skips_a_damaged_or_poisoned_newest_snapshot(caffe, dataset, tmp_path, caplog):
    """The newest pair is verified (parses, fits the net, finite); a failing one is skipped, named, and kept."""
    from caffe.proto import caffe_pb2

    run_dir = prepare_run(_options(dataset, tmp_path / "run", iterations=8, snapshot_every=4), ["test"])
    train(run_dir)
    snapshots = run_dir / "snapshots"
    assert not list(snapshots.glob("*.partial")), "Caffe writes each snapshot whole, then renames it into place"
    state = snapshots / "lwrefinenet_iter_8.solverstate"
    state.write_bytes(state.read_bytes()[:5000])  # what a kill mid-write left before patch 0006
    result = train(run_dir, resume=True)
    assert result.iteration == 8 and "skipping snapshot lwrefinenet_iter_8.solverstate" in caplog.text
    assert "truncated" in caplog.text
    assert [int(r["iteration"]) for r in _progress(run_dir)] == list(range(1, 9)), "rows 5-8 written once"

    model = snapshots / "lwrefinenet_iter_8.caffemodel"  # Caffe wrote the pair again; now poison its weights
    net = caffe_pb2.NetParameter()
    net.ParseFromString(model.read_bytes())
    next(layer for layer in net.layer if layer.blobs).blobs[0].data[0] = float("nan")
    model.write_bytes(net.SerializeToString())
    caplog.clear()
    assert train(run_dir, resume=True).iteration == 8
    assert "skipping snapshot lwrefinenet_iter_8.solverstate" in caplog.text and "non-finite" in caplog.text


@pytest.mark.slow
def test_keep_snapshots_keeps_the_newest_good_pairs(caffe, dataset, tmp_path):
    """--keep-snapshots 2: the two newest complete, finite pairs stay; older ones go; a poisoned pair never counts."""
    from caffe.proto import caffe_pb2

    from mrfnet.train.snapshots import SnapshotKeeper

    run_dir = prepare_run(_options(dataset, tmp_path / "run", iterations=8, snapshot_every=2, keep_snapshots=2),
                          ["test"])
    train(run_dir)
    snapshots = run_dir / "snapshots"
    names = sorted(path.name for path in snapshots.glob("*_iter_*"))
    assert names == [f"lwrefinenet_iter_{i}.{kind}" for i in (6, 8) for kind in ("caffemodel", "solverstate")]

    model = snapshots / "lwrefinenet_iter_8.caffemodel"  # poisoned: the keeper must keep iteration 6 as well
    net = caffe_pb2.NetParameter()
    net.ParseFromString(model.read_bytes())
    next(layer for layer in net.layer if layer.blobs).blobs[0].data[0] = float("nan")
    model.write_bytes(net.SerializeToString())
    assert SnapshotKeeper(run_dir, 1).prune() == []
    assert (snapshots / "lwrefinenet_iter_6.caffemodel").exists()
    assert train(run_dir, resume=True).iteration == 8  # resumes from the good pair at 6


@pytest.mark.slow
def test_a_failed_start_leaves_no_run_folder(caffe, dataset, tmp_path, caplog):
    """--weights that are truncated, empty or another variant's (Caffe would abort, or copy nothing and train
    from scratch) are refused before the folder exists (issue 24)."""
    from mrfnet.cli import main
    from netgen import build_deploy

    base = ["train", "--data", str(dataset), "--variant", "lwrefinenet", "--batch-size", "2", "--crop-size",
            str(CROP), "--iterations", "2"]
    other = tmp_path / "refinenet_deploy.prototxt"  # weights of another variant: Caffe aborts copying them in
    other.write_text(str(build_deploy("refinenet", height=16, width=16)))
    wrong = tmp_path / "refinenet.caffemodel"
    caffe.Net(str(other), caffe.TEST).save(str(wrong))
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(wrong.read_bytes()[:1000])
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    for weights, message in ((truncated, "truncated"), (wrong, "does not fit the lwrefinenet net"),
                             (empty, "holds no layer weights")):
        caplog.clear()
        run_dir = tmp_path / f"run-{weights.stem}"
        assert main([*base, "--run-dir", str(run_dir), "--weights", str(weights)]) == 1
        assert message in caplog.text
        assert not run_dir.exists() and not list(tmp_path.glob(".*.partial"))
    half = tmp_path / "half"  # a folder an older version left half-made
    half.mkdir()
    (half / "options.json").write_text(json.dumps(asdict(_options(dataset, half))))
    assert main(["train", "--run-dir", str(half), "--resume"]) == 1
    assert "not fully created" in caplog.text


@pytest.mark.slow
def test_resumes_that_would_restart_or_break_are_refused(dataset, tmp_path, caplog):
    """Issue 24: solverstates gone (a resume would retrain from 0 over the caffemodels), and --data whose
    records are smaller than the run's crop (Caffe would abort, and options.json would already point there)."""
    from mrfnet.cli import main

    run_dir = prepare_run(_options(dataset, tmp_path / "run", iterations=4, snapshot_every=4), ["test"])
    train(run_dir)
    options = (run_dir / "options.json").read_bytes()
    small = tmp_path / "small"
    small.mkdir()
    make_pair_lmdb(small / "train_lmdb", [(blur[:8, :8], sharp[:8, :8]) for blur, sharp in _pairs(2, seed=3)])
    assert main(["train", "--run-dir", str(run_dir), "--resume", "--data", str(small)]) == 1
    assert f"--crop-size {CROP} is larger than the training records of {small}" in caplog.text
    assert (run_dir / "options.json").read_bytes() == options
    for state in (run_dir / "snapshots").glob("*.solverstate"):
        state.unlink()
    models = {path: path.read_bytes() for path in (run_dir / "snapshots").glob("*.caffemodel")}
    assert main(["train", "--run-dir", str(run_dir), "--resume"]) == 1
    assert "holds caffemodels but no solverstate" in caplog.text
    assert {path: path.read_bytes() for path in (run_dir / "snapshots").glob("*.caffemodel")} == models


def test_resume_and_weights_are_exclusive(dataset, tmp_path):
    from mrfnet.cli import main

    assert main(["train", "--run-dir", str(tmp_path / "r"), "--resume", "--weights", "x.caffemodel"]) == 1


def test_the_loss_schedules():
    assert loss_schedule("uniform", 100) == [(0, [1.0] * 4)]
    assert loss_schedule("full-only", 100) == [(0, [0.0, 0.0, 0.0, 4.0])]
    phases = loss_schedule("coarse-to-fine", 100)
    assert [start for start, _ in phases] == [0, 25, 50, 75]
    for phase, (_, weights) in enumerate(phases):
        assert sum(weights) == pytest.approx(4) and int(np.argmax(weights)) == phase
    assert loss_schedule("0:1,1,1,1;50:0,0,0,4", 100) == [(0, [1.0] * 4), (50, [0.0, 0.0, 0.0, 4.0])]
    with pytest.raises(ValueError):
        loss_schedule("10:1,1,1,1", 100)


@pytest.mark.slow
def test_a_trained_checkpoint_beats_the_blurry_baseline(dataset, tmp_path):
    """Train briefly on one blur (5x5 box) and score held-out pairs of it: the output beats the blurred input."""
    from mrfnet.evaluate.scoring import score_run

    run_dir = prepare_run(_options(dataset, tmp_path / "run", iterations=60, snapshot_every=60, batch_size=4),
                          ["test"])
    train(run_dir)
    report = score_run(run_dir, LmdbTestSet(dataset / "val_lmdb"), out_dir=tmp_path / "score")
    assert report.last.iteration == 60
    assert report.last.psnr > report.baseline["psnr"] + 0.5, (report.last.psnr, report.baseline)


def test_gpus_are_refused_on_a_cpu_only_caffe(dataset, tmp_path, caplog):
    from mrfnet.cli import main

    command = ["train", "--run-dir", str(tmp_path / "run"), "--data", str(dataset), "--variant", "lwrefinenet",
               "--batch-size", "2", "--crop-size", str(CROP), "--iterations", "2", "--gpus", "0"]
    assert main(command) == 1
    assert "--gpus needs a Caffe built with CUDA" in caplog.text
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_val_every_writes_scores_that_agree_with_mrfnet_score(dataset, tmp_path):
    from mrfnet.evaluate.scoring import score_run

    run_dir = prepare_run(_options(dataset, tmp_path / "run", val_every=4), ["test"])
    train(run_dir)
    rows = _progress(run_dir)
    validated = {int(row["iteration"]): row for row in rows if row["val_psnr"]}
    assert sorted(validated) == [4, 8]
    best = json.loads((run_dir / "best.json").read_text())
    assert best["iteration"] in validated and (run_dir / "snapshots" / "best.caffemodel").is_file()
    report = score_run(run_dir, LmdbTestSet(dataset / "val_lmdb"), out_dir=tmp_path / "score")
    for result in report.results:
        row = validated[result.iteration]
        assert float(row["val_psnr"]) == pytest.approx(result.psnr, abs=1e-4)
        assert float(row["val_ssim"]) == pytest.approx(result.ssim, abs=1e-4)
        assert float(row["val_gain_db"]) == pytest.approx(result.psnr - report.baseline["psnr"], abs=1e-3)
    from mrfnet.train.caffe_log import plot_run, read_validation

    assert [row["iteration"] for row in read_validation(run_dir / "progress.csv")] == [4, 8]
    assert plot_run(run_dir).stat().st_size > 1000


def test_val_every_refuses_nonsense(dataset, tmp_path):
    for bad, message in ((dict(val_every=0), "--val-every"), (dict(val_every=2, val_limit=0), "--val-limit"),
                         (dict(val_limit=3), "only makes sense")):
        with pytest.raises(ValueError, match=message):
            prepare_run(_options(dataset, tmp_path / "run", **bad), ["test"])
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_short_mrfnet_run_learns_below_the_identity(caffe, dataset, tmp_path):
    """Does this pipeline learn at all? A short MRFNet run of the driver ends with a full-resolution loss on
    a fixed batch (the training pairs, whole) clearly below the identity loss (blurred input vs sharp) of that
    batch (0.86 x measured; the untrained net is exactly the identity)."""
    from data_prep.records import iter_pairs

    run_dir = prepare_run(_options(dataset, tmp_path / "run", variant="mrfnet", iterations=40, snapshot_every=40,
                                   batch_size=4), ["test"])
    train(run_dir)
    net = caffe.Net(str(run_dir / "deploy.prototxt"), str(run_dir / "snapshots" / "mrfnet_iter_40.caffemodel"),
                    caffe.TEST)
    pairs = [(blur, sharp) for _, blur, sharp in iter_pairs(dataset / "train_lmdb")]
    blur = np.stack([b for b, _ in pairs]).transpose(0, 3, 1, 2).astype(np.float32) / 255
    sharp = np.stack([s for _, s in pairs]).transpose(0, 3, 1, 2).astype(np.float32) / 255
    net.blobs["blur"].reshape(*blur.shape)
    net.reshape()
    net.blobs["blur"].data[...] = blur
    output = net.forward()["out_r4"]
    identity, trained = np.mean((blur - sharp) ** 2), np.mean((output - sharp) ** 2)
    assert trained < 0.95 * identity, (trained, identity)


@pytest.mark.slow
def test_a_moved_run_folder_resumes_with_its_data_moved_too(dataset, tmp_path):
    """Paths in a run folder are relative to it; --data on resume says where the LMDBs are now."""
    import shutil

    from mrfnet.cli import main

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    run_dir = prepare_run(_options(data, tmp_path / "run", iterations=8, snapshot_every=4), ["test"])
    assert "/" not in (run_dir / "solver.prototxt").read_text().split('net: "')[1].split('"')[0]
    stopped = train(run_dir)
    assert stopped.iteration == 8
    for state in (run_dir / "snapshots").glob("*_iter_8.*"):
        state.unlink()  # as if it had stopped at iteration 4
    moved, moved_data = tmp_path / "elsewhere" / "run", tmp_path / "elsewhere" / "data"
    moved.parent.mkdir()
    shutil.move(run_dir, moved)
    shutil.move(data, moved_data)
    assert main(["train", "--run-dir", str(moved), "--resume", "--data", str(moved_data)]) == 0
    assert (moved / "snapshots" / "lwrefinenet_iter_8.caffemodel").is_file() and not run_dir.exists()
    assert json.loads((moved / "options.json").read_text())["data"] == str(moved_data.resolve())


def _set_max_iter(run_dir: Path, max_iter: int) -> None:
    solver = run_dir / "solver.prototxt"
    solver.write_text(re.sub(r"max_iter: \d+", f"max_iter: {max_iter}", solver.read_text()))


@pytest.mark.slow
def test_a_snapshot_whose_progress_row_was_never_written_is_not_resumed_from(caffe, dataset, tmp_path, caplog):
    """The parent killed between its solver's snapshot and writing that row (issue 24): the resume goes back to
    the newest snapshot whose row is on record, so no row is missing, and ends at the uninterrupted weights."""
    straight = prepare_run(_options(dataset, tmp_path / "straight"), ["test"])
    train(straight)
    run_dir = prepare_run(_options(dataset, tmp_path / "run"), ["test"])
    train(run_dir)
    progress = run_dir / "progress.csv"
    progress.write_text("".join(progress.read_text().splitlines(keepends=True)[:7]))  # header + rows 1-6
    assert train(run_dir, resume=True).iteration == 8
    assert "skipping snapshot lwrefinenet_iter_8.solverstate: its progress row was never recorded" in caplog.text
    assert [int(r["iteration"]) for r in _progress(run_dir)] == list(range(1, 9))
    expected, got = _weights(caffe, straight, 8), _weights(caffe, run_dir, 8)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


@pytest.mark.slow
def test_a_validation_a_stop_cut_short_is_scored_on_resume(dataset, tmp_path):
    """A stop during validation leaves that row without its scores (it must not wait for a whole validation:
    mpirun kills a second after its SIGTERM); the resume scores the restored weights first and fills them in."""
    run_dir = prepare_run(_options(dataset, tmp_path / "run", val_every=4), ["test"])
    train(run_dir)
    progress = run_dir / "progress.csv"
    scored = _progress(run_dir)[-1]
    lines = progress.read_text().splitlines(keepends=True)
    cells = lines[-1].rstrip("\r\n").split(",")
    lines[-1] = ",".join(cells[:-3] + ["", "", ""]) + "\r\n"  # what a stop during iteration 8's validation leaves
    progress.write_text("".join(lines))
    assert train(run_dir, resume=True).iteration == 8
    rows = _progress(run_dir)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 9))
    assert rows[-1] == scored


@pytest.mark.slow
def test_sigterm_then_sigkill_loses_no_progress_row_or_validation(dataset, tmp_path):
    """What mpirun does to every process at a time limit (SIGTERM, SIGKILL a second later), wherever it lands:
    after a resume, progress.csv holds every iteration once, each with its validation."""
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "mrfnet.cli", "train", "--run-dir", str(run_dir), "--data", str(dataset),
               "--variant", "lwrefinenet", "--batch-size", "2", "--crop-size", str(CROP), "--iterations", "12",
               "--snapshot-every", "3", "--val-every", "1", "--loss-schedule", "uniform"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_progress(run_dir) if _has_rows(run_dir / "progress.csv") else []) < 4:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGTERM)
    time.sleep(1)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert train(run_dir, resume=True).iteration == 12
    rows = _progress(run_dir)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 13))
    assert all(row["val_psnr"] for row in rows), [row["iteration"] for row in rows if not row["val_psnr"]]


def _train_with_file_limit(arguments: list[str], limit: int) -> subprocess.CompletedProcess:
    """`mrfnet train` under a file-size limit, as on a full disk (Python ignores SIGXFSZ: writes fail, EFBIG)."""
    import resource

    return subprocess.run([sys.executable, "-m", "mrfnet.cli", "train", *arguments], capture_output=True, text=True,
                          timeout=300, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert done.returncode == 1 and len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr and "F0" not in done.stderr, done.stderr
    return errors[0]


@pytest.mark.slow
def test_a_snapshot_caffe_cannot_write_is_one_line_and_leaves_the_older_ones(dataset, tmp_path):
    """A file-size limit (as a full disk) refuses Caffe's snapshot write: one line saying so and where (not
    Caffe's F-line), no half-written file; a resume the disk cannot hold leaves the older snapshot as it was."""
    limit = 8 * 2**20  # above the logs' size, below a caffemodel's (18 MB)
    run_dir = tmp_path / "run"
    done = _train_with_file_limit(["--run-dir", str(run_dir), "--data", str(dataset), "--variant", "lwrefinenet",
                                   "--batch-size", "2", "--crop-size", str(CROP), "--iterations", "4",
                                   "--snapshot-every", "4"], limit)
    error = _one_error_line(done)
    snapshots = run_dir / "snapshots"
    assert f"Caffe could not write {snapshots.resolve()}/lwrefinenet_iter_4.caffemodel.partial" in error
    assert "the disk is full, or a quota or file-size limit refused the write" in error
    assert not list(snapshots.iterdir())
    assert (run_dir / "caffe.log").stat().st_size < limit / 4

    assert train(run_dir, resume=True).iteration == 4  # room again: it trains from the start
    before = {path.name: path.read_bytes() for path in snapshots.iterdir()}
    _set_max_iter(run_dir, 8)
    error = _one_error_line(_train_with_file_limit(["--run-dir", str(run_dir), "--resume"], limit))
    assert "no room to write " in error and "/mrfnet-train-" in error  # the solverstate's copy (36 MB) in TMPDIR
    assert {path.name: path.read_bytes() for path in snapshots.iterdir()} == before
    assert train(run_dir, resume=True).iteration == 8


def test_snapshot_room_is_checked_before_writing(caffe, tmp_path):
    import shutil

    from mrfnet.train.snapshots import snapshot_bytes, snapshot_shortfall

    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(str(build_deploy("lwrefinenet", height=16, width=16)))
    net = caffe.Net(str(deploy), caffe.TEST)
    parameters = sum(blob.count for blobs in net.params.values() for blob in blobs)
    assert snapshot_bytes(net) > 3 * 4 * parameters
    assert snapshot_shortfall(tmp_path, snapshot_bytes(net)) is None
    message = snapshot_shortfall(tmp_path, shutil.disk_usage(tmp_path).free + 2**30)
    assert message.startswith("the disk is full: ") and f"free in {tmp_path}" in message


def test_a_batch_caffe_cannot_hold_is_refused_in_one_line(dataset, tmp_path, caplog):
    from mrfnet.cli import main

    command = ["train", "--run-dir", str(tmp_path / "run"), "--data", str(dataset), "--variant", "lwrefinenet",
               "--batch-size", "1000000000", "--crop-size", str(CROP), "--iterations", "2"]
    assert main(command) == 1
    assert "over Caffe's limit of 2^31-1: at most" in caplog.text
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_config_reproduces_a_run_from_its_options_json(caffe, dataset, tmp_path):
    """`--config RUN/options.json` trains the same run again (same options but the folder, same weights);
    KEY=VALUE and flags change what they name only; a resume refuses anything that would change the run."""
    from mrfnet.cli import main

    first, again, changed = tmp_path / "first", tmp_path / "again", tmp_path / "changed"
    assert main(["train", "--run-dir", str(first), "--data", str(dataset), "--variant", "lwrefinenet",
                 "--batch-size", "2", "--crop-size", str(CROP), "--iterations", "4", "--snapshot-every", "4",
                 "--loss-schedule", "uniform"]) == 0
    assert main(["train", "--run-dir", str(again), "--config", str(first / "options.json")]) == 0
    stored = [json.loads((folder / "options.json").read_text()) for folder in (first, again)]
    assert [{**options, "run_dir": None} for options in stored] == [{**stored[0], "run_dir": None}] * 2
    expected, got = _weights(caffe, first, 4), _weights(caffe, again, 4)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert main(["train", "--run-dir", str(changed), "--config", str(first / "options.json"), "iterations=2",
                 "--seed", "3"]) == 0
    options = json.loads((changed / "options.json").read_text())
    assert (options["iterations"], options["seed"], options["batch_size"]) == (2, 3, 2)
    before = (first / "options.json").read_bytes()
    assert main(["train", "--run-dir", str(first), "--resume", "iterations=8"]) == 1
    assert main(["train", "--run-dir", str(first), "--resume", "--batch-size", "4"]) == 1
    assert (first / "options.json").read_bytes() == before
