"""The data-prep pipeline end to end: the CLI, the embedded set read by Caffe's own Data layer,
determinism, atomic and refused overwrites, skips, bad input, and the GOPRO and folder sources."""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np
import pytest
from image_files import make_folder_pairs, make_gopro, random_image, write_image

import data_prep.lmdb_writer
from data_prep.blur import apply_blur, apply_blur_patch, augment
from data_prep.build import SUMMARY, build_dataset, plan, worker_count
from data_prep.images import ImageError, read_image
from data_prep.lmdb_writer import META_INFO, partial_path
from data_prep.options import AUTO_WORKERS_MIN_PIXELS, BuildOptions
from data_prep.records import count_records, iter_pairs
from data_prep.sources import EMBEDDED, Item
from mrfnet.cli import main

CROP = 64
KEY = re.compile(r"^(\d{8})_.+$")


def meta_lines(lmdb_path):
    return [json.loads(line) for line in (lmdb_path / META_INFO).read_text(encoding="utf-8").splitlines()]


def records(lmdb_path):
    return [(key, blur.tobytes(), sharp.tobytes()) for key, blur, sharp in iter_pairs(lmdb_path)]


def expected_pair(meta):
    """The (blur, sharp) a record must hold, rebuilt from its source files and meta_info line alone."""
    sharp = read_image(meta["sharp"])[0]
    blur = None if meta["blur"] is None else read_image(meta["blur"])[0]
    if meta["augment"] is not None:
        sharp = augment(sharp, meta["augment"])
        blur = None if blur is None else augment(blur, meta["augment"])
    if blur is None and meta["blur_scope"] == "patch":
        (y, x), (h, w) = meta["crop"], meta["size"]
        return apply_blur_patch(sharp, y, x, h, meta["blur_params"]), sharp[y:y + h, x:x + w]
    if blur is None:
        blur = apply_blur(sharp, meta["blur_params"])
    if meta["crop"] is not None:
        (y, x), (h, w) = meta["crop"], meta["size"]
        sharp, blur = sharp[y:y + h, x:x + w], blur[y:y + h, x:x + w]
    return blur, sharp


def assert_records_match_sources(lmdb_path):
    metas = {meta["key"]: meta for meta in meta_lines(lmdb_path)}
    for key, blur, sharp in iter_pairs(lmdb_path):
        expected_blur, expected_sharp = expected_pair(metas[key])
        np.testing.assert_array_equal(sharp, expected_sharp, err_msg=key)
        np.testing.assert_array_equal(blur, expected_blur, err_msg=key)
    assert len(metas) == count_records(lmdb_path)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "embedded"
    assert main(["data-prep", "--out", str(out), "--workers", "2"]) == 0
    return out


def test_embedded_cli_build(embedded):
    summary = json.loads((embedded / SUMMARY).read_text())
    assert {split: s["records"] for split, s in summary["splits"].items()} == {"train": 608, "val": 62, "test": 2}
    assert summary["patch_size"] == 96 and summary["stride"] == 48 and summary["skipped"]["smaller_than_patch"] == []
    assert summary["blur_per"] == "patch" and summary["max_motion"] == 30
    assert sorted(p.name for p in embedded.parent.iterdir()) == ["embedded"]  # no .partial left
    for split, split_summary in summary["splits"].items():
        path = embedded / f"{split}_lmdb"
        assert count_records(path) == split_summary["records"]
        keys = [meta["key"] for meta in meta_lines(path)]
        indices = sorted(int(KEY.match(key).group(1)) for key in keys)
        assert indices == list(range(len(keys)))  # %08d_<name>, each index once
    names = {meta["name"]: meta["split"] for split in ("train", "val", "test")
             for meta in meta_lines(embedded / f"{split}_lmdb")}
    assert names == {key[2].rsplit(".", 1)[0]: split for key, split in EMBEDDED.items()}  # no image in two splits
    shapes = sorted(blur.shape for _, blur, _ in iter_pairs(embedded / "test_lmdb"))
    assert shapes == [(400, 600, 3), (427, 640, 3)]  # the whole test photographs


def test_embedded_records_are_shuffled_and_reproducible_from_meta_info(embedded):
    train = meta_lines(embedded / "train_lmdb")
    kernels = {json.dumps(meta["blur_params"], sort_keys=True) for meta in train}
    assert len(kernels) == len(train) and {meta["blur_scope"] for meta in train} == {"patch"}  # a blur per patch
    first = [meta["name"] for meta in train[:30]]
    assert len(set(first)) > 1  # images interleaved, not one after the other
    for split in ("val", "test"):
        assert_records_match_sources(embedded / f"{split}_lmdb")
    metas = {meta["key"]: meta for meta in train[:8]}
    for key, blur, sharp in iter_pairs(embedded / "train_lmdb"):
        if key not in metas:
            break
        expected_blur, expected_sharp = expected_pair(metas[key])
        np.testing.assert_array_equal(sharp, expected_sharp)
        np.testing.assert_array_equal(blur, expected_blur)
        assert not np.array_equal(blur, sharp)


def caffe_data_net(caffe, tmp_path, train_lmdb, val_lmdb):
    """netgen's own Data and Slice layers of the training net, alone."""
    from netgen import build_train_val

    full = build_train_val("mrfnet", train_source=str(train_lmdb), val_source=str(val_lmdb), batch_size=2,
                           crop_size=CROP)
    net = caffe.proto.caffe_pb2.NetParameter(name="data_only")
    net.layer.extend(layer for layer in full.layer if layer.type in ("Data", "Slice"))
    assert [layer.type for layer in net.layer] == ["Data", "Data", "Slice"]
    path = tmp_path / "data_only.prototxt"
    path.write_text(str(net))
    return caffe.Net(str(path), caffe.TRAIN)


def find_crop(record, crop):
    """(y, x, mirrored) where ``crop`` sits in ``record``; None if nowhere."""
    height, width = record.shape[:2]
    for mirrored in (False, True):
        flipped = crop[:, ::-1] if mirrored else crop
        for y in range(height - CROP + 1):
            for x in range(width - CROP + 1):
                if np.abs(record[y:y + CROP, x:x + CROP].astype(np.float32) - flipped).max() < 1e-3:
                    return y, x, mirrored
    return None


def test_caffe_data_layer_reads_aligned_pairs(caffe, embedded, tmp_path):
    net = caffe_data_net(caffe, tmp_path, embedded / "train_lmdb", embedded / "val_lmdb")
    net.forward()
    blur_blob, sharp_blob = net.blobs["blur"].data, net.blobs["sharp"].data
    assert blur_blob.shape == sharp_blob.shape == (2, 3, CROP, CROP)
    first_two = [pair for pair, _ in zip(iter_pairs(embedded / "train_lmdb"), range(2), strict=False)]
    for i, (key, blur, sharp) in enumerate(first_two):
        blur_crop = blur_blob[i].transpose(1, 2, 0) * 255  # netgen scales uint8 by 1/255
        sharp_crop = sharp_blob[i].transpose(1, 2, 0) * 255
        where = find_crop(blur, blur_crop)
        assert where is not None, f"Caffe's blur half of {key} is no crop of the record"
        y, x, mirrored = where
        expected = sharp[y:y + CROP, x:x + CROP]
        np.testing.assert_allclose(sharp_crop, expected[:, ::-1] if mirrored else expected, atol=1e-3,
                                   err_msg=f"{key}: sharp half not cropped/mirrored like the blur half")


def visdrone_tree(root, count=6, size=(40, 50)):
    for i in range(count):
        write_image(root / f"img{i}.png", random_image(*size, seed=i))
    return root


def test_blur_per_image_test_copies_and_max_motion(tmp_path):
    summary = build_dataset(BuildOptions(out=tmp_path / "out", patch_size=96, blur_per="image", test_copies=3,
                                         max_motion=10))
    assert summary["splits"]["test"]["records"] == 6 and summary["splits"]["val"]["records"] == 62
    metas = meta_lines(tmp_path / "out" / "train_lmdb")
    assert {meta["blur_scope"] for meta in metas} == {"image"}
    assert len({json.dumps(meta["blur_params"], sort_keys=True) for meta in metas}) == 5  # one per photograph
    assert all(meta["blur_params"]["motion_length"] <= 10 for meta in metas)
    assert_records_match_sources(tmp_path / "out" / "test_lmdb")
    for bad in (dict(blur_per="pixel"), dict(test_copies=0), dict(max_motion=3)):
        with pytest.raises(ValueError):
            build_dataset(BuildOptions(out=tmp_path / "bad", **bad))
    assert not (tmp_path / "bad").exists()


def test_min_motion_equal_to_max_motion_gives_one_blur_length(tmp_path, caplog):
    out = tmp_path / "m10"
    assert main(["data-prep", "--out", str(out), "--min-motion", "10", "--max-motion", "10", "--test-copies", "3",
                 "--workers", "1"]) == 0
    summary = json.loads((out / SUMMARY).read_text())
    assert (summary["min_motion"], summary["max_motion"]) == (10, 10)
    for split in ("train", "val", "test"):
        assert {meta["blur_params"]["motion_length"] for meta in meta_lines(out / f"{split}_lmdb")} == {10}
    assert_records_match_sources(out / "test_lmdb")
    assert build_dataset(BuildOptions(out=tmp_path / "default", workers=1))["min_motion"] == 5  # the recipe's
    for bad, message in ((["--min-motion", "15", "--max-motion", "10"], "longer than the longest"),
                         (["--min-motion", "7", "--max-motion", "9"], "no motion length of the recipe")):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert main(["data-prep", "--out", str(tmp_path / "bad"), *bad]) == 1
        errors = [record for record in caplog.records if record.levelno == logging.ERROR]
        assert len(errors) == 1 and errors[0].exc_info is None and message in errors[0].getMessage()
        assert "\n" not in errors[0].getMessage()
    assert not (tmp_path / "bad").exists()


def test_min_motion_is_not_recorded_for_pairs_from_files(tmp_path):
    make_folder_pairs(tmp_path / "pairs", ["a.png", "b.png"], size=(20, 20))
    summary = build_dataset(BuildOptions(source="folder", root=tmp_path / "pairs", out=tmp_path / "out",
                                         patch_size=16, workers=1, val_fraction=0, test_fraction=0, min_motion=10,
                                         max_motion=10))
    assert summary["min_motion"] is None and summary["max_motion"] is None  # no synthetic blur: as --max-motion


def test_same_seed_same_records_whatever_the_workers(tmp_path):
    root = visdrone_tree(tmp_path / "images")
    common = dict(source="visdrone", root=root, patch_size=16, stride=16, copies=2, augment=True, val_fraction=0.2,
                  test_fraction=0.2)
    one = build_dataset(BuildOptions(**common, out=tmp_path / "one", workers=1, seed=0))
    two = build_dataset(BuildOptions(**common, out=tmp_path / "two", workers=2, seed=0))
    build_dataset(BuildOptions(**common, out=tmp_path / "other", workers=1, seed=1))
    # data.mdb's size depends on the order records arrive in (B-tree page splits): compare the records
    assert {split: s["records"] for split, s in one["splits"].items()} == {"train": 96, "val": 24, "test": 2}
    assert {split: s["records"] for split, s in two["splits"].items()} == {"train": 96, "val": 24, "test": 2}
    for split in one["splits"]:
        assert records(tmp_path / "one" / f"{split}_lmdb") == records(tmp_path / "two" / f"{split}_lmdb")
    train = records(tmp_path / "one" / "train_lmdb")
    assert [key for key, _, _ in train] != [key for key, _, _ in records(tmp_path / "other" / "train_lmdb")]
    assert any(meta["augment"]["rot90"] % 2 for meta in meta_lines(tmp_path / "one" / "train_lmdb"))
    assert all(meta["augment"] is None for meta in meta_lines(tmp_path / "one" / "val_lmdb"))  # train only
    assert_records_match_sources(tmp_path / "one" / "train_lmdb")


def test_interrupted_build_leaves_nothing_and_a_rerun_completes(tmp_path, monkeypatch):
    root = visdrone_tree(tmp_path / "images")
    options = BuildOptions(source="visdrone", root=root, out=tmp_path / "out", patch_size=16, workers=1,
                           val_fraction=0, test_fraction=0)
    put = data_prep.lmdb_writer.LmdbWriter.put
    calls = []

    def failing_put(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return put(self, *args, **kwargs)

    monkeypatch.setattr(data_prep.lmdb_writer.LmdbWriter, "put", failing_put)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(options)
    assert list(tmp_path.iterdir()) == [root]  # no out, no out.partial
    monkeypatch.undo()
    killed = partial_path(tmp_path / "out") / "train_lmdb.partial"  # what a kill -9 leaves
    killed.mkdir(parents=True)
    (killed / "data.mdb").write_bytes(b"half")
    summary = build_dataset(options)
    assert summary["splits"]["train"]["records"] == count_records(tmp_path / "out" / "train_lmdb") == 6 * 3 * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out"]


def test_existing_output_is_refused_unless_forced_and_kept_if_the_rebuild_fails(tmp_path):
    root = visdrone_tree(tmp_path / "images")
    out = tmp_path / "out"
    argv = ["data-prep", "--source", "visdrone", "--root", str(root), "--out", str(out), "--patch-size", "16",
            "--workers", "1", "--val-fraction", "0", "--test-fraction", "0"]
    assert main(argv) == 0
    before = records(out / "train_lmdb")
    with pytest.raises(FileExistsError, match="--force"):
        build_dataset(BuildOptions(source="visdrone", root=root, out=out))
    assert main(argv) == 1  # the CLI reports it in one line
    assert main([*argv, "--force", "--seed", "5"]) == 0
    assert records(out / "train_lmdb") != before
    forced = records(out / "train_lmdb")
    (root / "img3.png").write_bytes(b"garbage")
    with pytest.raises(ImageError, match=r"img3\.png"):
        build_dataset(BuildOptions(source="visdrone", root=root, out=out, patch_size=16, force=True))
    assert records(out / "train_lmdb") == forced  # nothing valid lost


def test_images_smaller_than_the_patch_are_skipped_and_counted(tmp_path):
    root = visdrone_tree(tmp_path / "images", count=3)
    write_image(root / "tiny.png", random_image(12, 40))
    summary = build_dataset(BuildOptions(source="visdrone", root=root, out=tmp_path / "out", patch_size=16, stride=16,
                                         workers=1, val_fraction=0, test_fraction=0))
    assert summary["skipped"]["smaller_than_patch"] == [f"{root / 'tiny.png'} (12x40)"]
    assert summary["splits"]["train"] == {**summary["splits"]["train"], "images": 3, "records": 3 * 3 * 4}
    with pytest.raises(ValueError, match="no training records"):
        build_dataset(BuildOptions(source="visdrone", root=root, out=tmp_path / "big", patch_size=64, workers=1,
                                   val_fraction=0, test_fraction=0))


def test_truncated_image_fails_the_build_naming_it(tmp_path):
    root = visdrone_tree(tmp_path / "images")
    data = (root / "img2.png").read_bytes()
    (root / "img2.png").write_bytes(data[:len(data) // 2])  # the header still reads
    with pytest.raises(ImageError, match=r"img2\.png"):
        build_dataset(BuildOptions(source="visdrone", root=root, out=tmp_path / "out", patch_size=16, workers=2,
                                   val_fraction=0, test_fraction=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_gopro_build_pairs_real_blur_with_sharp(tmp_path):
    make_gopro(tmp_path / "GOPRO_Large", {"train": ["GOPR0001_00_00", "GOPR0002_00_00", "GOPR0003_00_00"],
                                          "test": ["GOPR0009_00_00"]})
    out = tmp_path / "gopro"
    assert main(["data-prep", "--source", "gopro", "--root", str(tmp_path / "GOPRO_Large"), "--out", str(out),
                 "--gopro-blur", "blur_gamma", "--patch-size", "16", "--workers", "1", "--val-fraction", "0.3"]) == 0
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["gopro_blur"] == "blur_gamma"
    assert {split: s["records"] for split, s in summary["splits"].items()} == {"train": 16, "val": 8, "test": 2}
    for split in ("train", "val", "test"):
        metas = meta_lines(out / f"{split}_lmdb")
        assert all("/blur_gamma/" in meta["blur"] and meta["blur_params"] is None for meta in metas)
        assert_records_match_sources(out / f"{split}_lmdb")
    (_, blur, sharp), _ = iter_pairs(out / "test_lmdb")
    assert blur.shape == (24, 32, 3)


def test_folder_build_non_ascii_names_and_conversions(tmp_path):
    make_folder_pairs(tmp_path / "pairs", ["ñandú.png", "画像/一.png", "plain.png"], size=(20, 20))
    gray = random_image(20, 20, seed=9)[:, :, 0]
    write_image(tmp_path / "pairs" / "sharp" / "gray.png", gray)
    write_image(tmp_path / "pairs" / "blur" / "gray.png", (np.stack([gray] * 3, axis=2).astype(np.uint16) * 257))
    summary = build_dataset(BuildOptions(source="folder", root=tmp_path / "pairs", out=tmp_path / "out", patch_size=16,
                                         stride=4, workers=1, val_fraction=0, test_fraction=0))
    assert summary["converted"] == {"sharp: grayscale replicated to BGR": 1, "blur: 16-bit rounded to 8-bit": 1}
    names = {meta["name"] for meta in meta_lines(tmp_path / "out" / "train_lmdb")}
    assert names == {"ñandú", "画像_一", "plain", "gray"}
    assert_records_match_sources(tmp_path / "out" / "train_lmdb")


def test_cli_needs_a_root_for_file_sources(tmp_path):
    assert main(["data-prep", "--source", "folder", "--out", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()


def test_worker_processes_start_only_for_large_jobs(tmp_path):
    def tasks(side, count=4):
        items = [Item(f"i{i}", "train", tmp_path / f"i{i}.png", None, side, side) for i in range(count)]
        return plan(items, BuildOptions(patch_size=16, stride=16).resolved())[0]["train"]

    assert worker_count(BuildOptions(), tasks(100)) == 1  # small: in-process
    big = tasks(int((AUTO_WORKERS_MIN_PIXELS / 4) ** 0.5) + 1)
    assert worker_count(BuildOptions(), big) == min(os.cpu_count() or 1, 4)
    assert worker_count(BuildOptions(workers=3), tasks(100, count=2)) == 2  # never more than the tasks


def test_ctrl_c_stops_the_build_quietly_and_keeps_nothing_half_written(tmp_path):
    """SIGINT to the process group (a terminal's Ctrl-C): exit 130, one line, no traceback, no partial LMDB."""
    import contextlib
    import mmap
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "data"
    process = subprocess.Popen([sys.executable, "-m", "mrfnet.cli", "data-prep", "--out", str(out), "--copies", "40",
                                "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Past start-up: the workers are making pairs once the first transaction of records (128 of the 24,320) has
    # grown the training LMDB past its two meta pages. Polled to a deadline, however slow the machine.
    data_mdb = partial_path(out) / "train_lmdb.partial" / "data.mdb"
    empty = 2 * mmap.PAGESIZE
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if data_mdb.stat().st_size > empty:
                break
        time.sleep(0.05)
    else:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate(timeout=60)
        pytest.fail(f"no records written in 300 s, or the build ended first (exit {process.returncode}):\n{output}")
    assert process.poll() is None, "the build ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "interrupted (Ctrl-C)" in output and "Traceback" not in output
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
