"""`mrfnet score` and `mrfnet table` on real Caffe: small LMDB and folder test sets, a run folder, bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from scoring_helpers import (
    SMALLEST_VARIANT,
    make_folders,
    make_lmdb,
    make_pairs,
    make_run,
    save_caffemodel,
    write_deploy,
)

from mrfnet import cli
from mrfnet.evaluate import montage
from mrfnet.evaluate.metrics import MetricOptions, psnr, ssim
from mrfnet.evaluate.scoring import ScoreOptions, score_model, score_run
from mrfnet.evaluate.tables import make_table
from mrfnet.evaluate.testsets import FolderTestSet, LmdbTestSet, open_test_set
from mrfnet.infer.model import Model
from mrfnet.infer.model_source import resolve_model
from mrfnet.infer.weights import WeightsMismatch, check_weights, inspect_deploy
from mrfnet.runtime.caffe_env import CaffeError
from mrfnet.runtime.run_files import run_snapshots
from netgen import VARIANTS


@pytest.fixture(scope="module")
def pairs():
    return make_pairs()


@pytest.fixture(scope="module")
def model_files(caffe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    deploy = write_deploy(folder)
    return deploy, save_caffemodel(caffe, deploy, folder / f"{SMALLEST_VARIANT}_iter_5.caffemodel")


@pytest.fixture(scope="module")
def test_lmdb(pairs, tmp_path_factory):
    return make_lmdb(tmp_path_factory.mktemp("data") / "test_lmdb", pairs)


@pytest.fixture(scope="module")
def lmdb_report(model_files, test_lmdb, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored")
    report = score_model(*model_files, LmdbTestSet(test_lmdb), out_dir=out,
                         options=ScoreOptions(save_images=True, montage=True, montage_limit=2))
    return report, out


def _rows(path):
    with path.open() as file:
        return list(csv.DictReader(file))


def test_lmdb_scores_every_image_with_the_blurry_baseline(lmdb_report, pairs, test_lmdb):
    report, out = lmdb_report
    rows = _rows(out / "images.csv")
    assert [row["name"] for row in rows] == [f"{i:08d}_{name}" for i, (name, _, _) in enumerate(pairs)]
    summary = json.loads((out / "summary.json").read_text())
    result = summary["results"][0]
    assert result["iteration"] == 5
    assert result["psnr"] == pytest.approx(np.mean([float(r["psnr"]) for r in rows]), abs=1e-5)
    assert result["ssim"] == pytest.approx(np.mean([float(r["ssim"]) for r in rows]), abs=1e-6)
    options = MetricOptions()
    for row, (_, blur, sharp) in zip(rows, pairs, strict=True):
        rgb = lambda image: image[..., ::-1]  # noqa: E731
        assert float(row["blur_psnr"]) == pytest.approx(psnr(rgb(sharp), rgb(blur), options), abs=1e-5)
        assert float(row["blur_ssim"]) == pytest.approx(ssim(rgb(sharp), rgb(blur), options), abs=1e-6)
        # the saved PNG is the uint8 output that was scored
        saved = cv2.imread(str(out / "images" / f"{row['name']}.png"))
        assert saved.shape == sharp.shape
        assert float(row["psnr"]) == pytest.approx(psnr(rgb(sharp), rgb(saved), options), abs=1e-5)
        # an untrained net returns about its input (output convolutions start at N(0, 1e-3))
        assert float(row["psnr"]) == pytest.approx(float(row["blur_psnr"]), abs=3.0)
    assert summary["baseline"]["psnr"] == pytest.approx(np.mean([float(r["blur_psnr"]) for r in rows]), abs=1e-5)
    assert summary["metrics"] == {"ssim": "skimage", "y_channel": False, "crop_border": 0, "data_range": 255.0}
    assert summary["test_set"]["name"] == test_lmdb.parent.name and summary["test_set"]["images"] == len(pairs)
    assert report.mean == {"psnr": report.last.psnr, "ssim": report.last.ssim}
    assert report.last.parameters > 1_000_000


def test_montages_and_contact_sheet(lmdb_report, pairs):
    report, out = lmdb_report
    files = sorted((out / "montages").glob("*.png"))
    assert len(files) == 2  # --montage-limit, spread over the set: the first and the last image
    first = cv2.imread(str(files[0]))
    height, width = pairs[0][1].shape[:2]
    assert first.shape == (2 * height + montage.GAP, 3 * width + 2 * montage.GAP, 3)
    sheet = cv2.imread(str(report.montage))
    assert report.montage == out / "contact_sheet.png"
    assert sheet.shape[1] == 2 * montage.SHEET_THUMB_WIDTH + montage.GAP


def test_folders_pair_by_name_and_match_the_lmdb(model_files, pairs, lmdb_report, tmp_path):
    blur_dir, sharp_dir = make_folders(tmp_path, pairs)
    test_set = open_test_set(blur_dir=blur_dir, sharp_dir=sharp_dir)
    assert isinstance(test_set, FolderTestSet) and len(test_set) == len(pairs)
    report = score_model(*model_files, test_set, out_dir=tmp_path / "out")
    rows = _rows(tmp_path / "out" / "images.csv")
    assert sorted(row["name"] for row in rows) == ["img0", "img1", "sub/img2"]
    by_size = {(int(r["height"]), int(r["width"])): float(r["psnr"]) for r in rows}
    lmdb_rows = _rows(lmdb_report[1] / "images.csv")
    for row in lmdb_rows:  # the same images scored from PNG files give the same numbers
        assert by_size[(int(row["height"]), int(row["width"]))] == pytest.approx(float(row["psnr"]), abs=1e-5)
    assert report.test_set["name"] == tmp_path.name


def test_missing_pair_and_size_mismatch_are_errors_naming_files(pairs, tmp_path):
    blur_dir, sharp_dir = make_folders(tmp_path, pairs)
    (sharp_dir / "img1.png").unlink()
    with pytest.raises(ValueError, match=r"blur/img1\.png \(no sharp partner\)"):
        FolderTestSet(blur_dir, sharp_dir)
    cv2.imwrite(str(sharp_dir / "img1.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match=r"img1\.png \(47x33\) and .*img1\.png \(10x10\) differ in size"):
        list(FolderTestSet(blur_dir, sharp_dir))
    with pytest.raises(ValueError, match="either a test LMDB"):
        open_test_set(test_lmdb=tmp_path, blur_dir=blur_dir, sharp_dir=sharp_dir)
    with pytest.raises(FileNotFoundError):
        LmdbTestSet(tmp_path / "nothing")


@pytest.mark.slow
def test_run_folder_scores_snapshots_in_iteration_order(caffe, test_lmdb, tmp_path):
    run = make_run(caffe, tmp_path / "run", iterations=(10, 2))
    assert [it for it, _ in run_snapshots(run)] == [2, 10]  # not the names' order (_iter_10 < _iter_2)
    report = score_run(run, LmdbTestSet(test_lmdb), label="tiny")
    out = run / "score"
    assert [r.iteration for r in report.results] == [2, 10]
    with (out / "score.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(r["iteration"]) for r in rows] == [2, 10]
    assert all(float(r["blur_psnr"]) == pytest.approx(report.baseline["psnr"], abs=1e-5) for r in rows)
    assert (out / "score.png").stat().st_size > 10_000
    assert (out / "iter_2" / "images.csv").is_file() and (out / "iter_10" / "images.csv").is_file()
    # the CLI on the same run folder, one snapshot, other metric options
    code = cli.main(["score", str(run), "--test-lmdb", str(test_lmdb), "--out", str(tmp_path / "cli"),
                     "--last-only", "--ssim", "gaussian2d", "--y-channel", "--crop-border", "2"])
    assert code == 0
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert [r["iteration"] for r in summary["results"]] == [10]
    assert summary["metrics"]["ssim"] == "gaussian2d" and summary["metrics"]["y_channel"]


@pytest.mark.slow
def test_table_compares_score_outputs(lmdb_report, model_files, caffe, test_lmdb, tmp_path):
    other = save_caffemodel(caffe, model_files[0], tmp_path / "other_iter_7.caffemodel", seed=3)
    score_model(model_files[0], other, LmdbTestSet(test_lmdb), out_dir=tmp_path / "other")
    table = make_table([f"first={lmdb_report[1]}", str(tmp_path / "other" / "summary.json")])
    text = table.markdown()
    assert "| blurry input |" in text and "| first |" in text and "| other_iter_7 |" in text
    assert f"{test_lmdb.parent.name} (3) PSNR" in text and "SSIM skimage, RGB" in text
    assert len(table.csv().strip().splitlines()) == 4  # header, blurry, two models
    assert cli.main(["table", str(lmdb_report[1]), f"b={tmp_path / 'other'}", "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t.md").is_file() and (tmp_path / "t.csv").is_file()
    # different metric options cannot share a table
    score_model(model_files[0], other, LmdbTestSet(test_lmdb), out_dir=tmp_path / "y",
                options=ScoreOptions(metrics=MetricOptions(y_channel=True)))
    with pytest.raises(ValueError, match="different metric options"):
        make_table([str(lmdb_report[1]), str(tmp_path / "y")])


# ---------------------------------------------------------------- bad input


@pytest.mark.slow
def test_a_run_with_a_damaged_snapshot_scores_the_others_and_names_it(caffe, test_lmdb, tmp_path, capsys):
    run = make_run(caffe, tmp_path / "run", iterations=(2, 5, 10))
    damaged = run / "snapshots" / f"{SMALLEST_VARIANT}_iter_5.caffemodel"
    damaged.write_bytes(damaged.read_bytes()[:3000])
    assert cli.main(["score", str(run), "--test-lmdb", str(test_lmdb), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["iteration"] for r in summary["results"]] == [2, 10]
    assert [Path(s["caffemodel"]).name for s in summary["skipped"]] == [damaged.name]
    assert "truncated" in summary["skipped"][0]["reason"]
    assert f"1 snapshot(s) could not be scored: {damaged.name}" in capsys.readouterr().out
    for snapshot in (run / "snapshots").glob("*.caffemodel"):
        snapshot.write_bytes(b"junk")
    assert cli.main(["score", str(run), "--test-lmdb", str(test_lmdb), "--out", str(tmp_path / "none")]) == 1


def test_missing_and_corrupt_caffemodels_are_clear_errors(model_files, test_lmdb, tmp_path, caplog):
    deploy, weights = model_files
    info = inspect_deploy(deploy)
    with pytest.raises(FileNotFoundError, match="caffemodel .*missing.caffemodel does not exist"):
        check_weights(tmp_path / "missing.caffemodel", info.param_shapes)
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="garbage.caffemodel"):
        check_weights(garbage, info.param_shapes)
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.caffemodel"):
        check_weights(truncated, info.param_shapes)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(WeightsMismatch, match="no layer weights"):
        check_weights(empty, info.param_shapes)
    # the CLI reports it in one line with exit code 1
    assert cli.main(["score", str(truncated), "--deploy", str(deploy), "--test-lmdb", str(test_lmdb)]) == 1
    assert "truncated.caffemodel is not a caffemodel" in caplog.text


@pytest.mark.slow
def test_weights_of_another_variant_are_refused(caffe, model_files, tmp_path):
    refinenet = inspect_deploy(write_deploy(tmp_path, "refinenet"))
    with pytest.raises(WeightsMismatch, match=r"(?s)does not fit.*differ in shape: r1_rcu1_conv1: the net has "
                                              r"\[256x256x3x3, 256\], the caffemodel \[128x256x1x1, 128\]"):
        check_weights(model_files[1], refinenet.param_shapes)
    deploy = write_deploy(tmp_path, "mrfnet")  # lwrefinenet + MRF units and remote residuals
    model = Model(deploy)
    with pytest.raises(WeightsMismatch, match=r"(?s)does not fit.*no weights in it: conv_r1_m1"):
        model.load_weights(model_files[1])
    # the process survived, and the net still works with weights that fit
    model.load_weights(save_caffemodel(caffe, deploy, tmp_path / "mrfnet.caffemodel"))
    assert model.deblur(np.zeros((16, 16, 3), np.uint8)).shape == (16, 16, 3)


def test_prototxt_caffe_rejects_is_a_caffe_error(tmp_path, model_files):
    bad = tmp_path / "bad.prototxt"
    text = model_files[0].read_text().replace('bottom: "Conv1"', 'bottom: "no_such_blob"', 1)
    bad.write_text(text)
    with pytest.raises(CaffeError, match="Unknown bottom blob 'no_such_blob'"):
        Model(bad)
    broken = tmp_path / "broken.prototxt"
    broken.write_text("layer { name: 'x' type: ")
    with pytest.raises(ValueError, match="not a valid prototxt"):
        inspect_deploy(broken)
    no_output = tmp_path / "no_output.prototxt"
    no_output.write_text('layer { name: "blur" type: "Input" top: "blur" input_param { shape { dim: 1 dim: 3 '
                         'dim: 8 dim: 8 } } }')
    with pytest.raises(ValueError, match="no output blob 'out_r4'"):
        inspect_deploy(no_output)


def test_bare_caffemodel_needs_a_deploy_or_variant(model_files, test_lmdb, tmp_path, caplog):
    lone = shutil.copy(model_files[1], tmp_path / "weights.caffemodel")
    assert cli.main(["score", str(lone), "--test-lmdb", str(test_lmdb)]) == 1  # no deploy, no variant
    assert "give --deploy PROTOTXT or --variant NAME" in caplog.text
    assert cli.main(["score", str(lone), "--test-lmdb", str(test_lmdb), "--variant", SMALLEST_VARIANT,
                     "--limit", "1"]) == 0
    assert len(_rows(tmp_path / "weights_score" / "images.csv")) == 1


def test_a_variant_that_contradicts_the_run_or_the_deploy_is_refused(caffe, model_files, test_lmdb, tmp_path, caplog):


    run = make_run(caffe, tmp_path / "runs")  # trained as SMALLEST_VARIANT
    other = next(name for name in VARIANTS if name != SMALLEST_VARIANT)
    with pytest.raises(ValueError, match=f"--variant {other}, but .* was trained as {SMALLEST_VARIANT}"):
        resolve_model(run, variant=other)
    assert resolve_model(run, variant=SMALLEST_VARIANT).variant == SMALLEST_VARIANT
    with pytest.raises(ValueError, match="both name the net"):
        resolve_model(model_files[1], deploy=model_files[0], variant=SMALLEST_VARIANT)
    assert cli.main(["score", str(run), "--test-lmdb", str(test_lmdb), "--variant", other]) == 1
    assert "was trained as" in caplog.text
