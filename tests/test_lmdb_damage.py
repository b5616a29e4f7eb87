"""Damaged and foreign LMDBs: one clear error naming the LMDB (data_prep.records.open_lmdb), never a traceback,
a glog CHECK or a bare SIGBUS, and the damaged files are left as they were."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import lmdb
import numpy as np
import pytest
from scoring_helpers import make_lmdb, make_pairs

from data_prep.records import LmdbError, check_pairs, count_records, iter_pairs, smallest_side
from mrfnet import cli


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    pairs = make_pairs(sizes=((40, 48),) * 40)  # several pages of records
    return make_lmdb(tmp_path_factory.mktemp("good") / "train_lmdb", pairs)


def _truncated(good: Path, tmp_path: Path) -> Path:
    copy = shutil.copytree(good, tmp_path / "truncated" / "train_lmdb")
    data = copy / "data.mdb"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])  # a copy cut off part-way
    return copy


def _garbage_header(good: Path, tmp_path: Path) -> Path:
    copy = shutil.copytree(good, tmp_path / "garbage" / "train_lmdb")
    data = copy / "data.mdb"
    raw = bytearray(data.read_bytes())
    raw[:8192] = np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes()  # both meta pages
    data.write_bytes(bytes(raw))
    return copy


def _foreign(tmp_path: Path) -> Path:
    path = tmp_path / "foreign" / "train_lmdb"
    path.mkdir(parents=True)
    with lmdb.open(str(path), map_size=1 << 22) as env, env.begin(write=True) as txn:  # not Datums at all
        for index in range(4):
            txn.put(f"{index:04d}".encode(), b"\xff\xfe not a protobuf message \x00" * 3)
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty" / "train_lmdb"
    path.mkdir(parents=True)
    with lmdb.open(str(path), map_size=1 << 20) as env, env.begin(write=True):
        pass
    return path


DAMAGE = {"truncated": lambda good, tmp: _truncated(good, tmp), "garbage header": lambda good, tmp: _garbage_header(
    good, tmp), "foreign records": lambda good, tmp: _foreign(tmp), "empty": lambda good, tmp: _empty(tmp)}
MESSAGES = {"truncated": "is truncated", "garbage header": "not a readable LMDB", "foreign records": "not a Datum",
            "empty": "holds no records"}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_each_damage_is_one_clear_error_naming_the_lmdb(good, tmp_path, kind):
    path = DAMAGE[kind](good, tmp_path)
    before = _digest(path)
    with pytest.raises(LmdbError, match=MESSAGES[kind]) as info:
        check_pairs(path)
    assert str(path) in str(info.value) and "mrfnet data-prep" in str(info.value)
    if kind != "empty":
        with pytest.raises(LmdbError, match=MESSAGES[kind]):
            list(iter_pairs(path))
        with pytest.raises(LmdbError):
            smallest_side(path)
    assert _digest(path) == before, "reading must not change the damaged LMDB"


def test_a_good_lmdb_passes(good):
    assert check_pairs(good) == count_records(good) == 40
    assert len(list(iter_pairs(good))) == 40


@pytest.mark.parametrize("kind", ["truncated", "foreign records"])
def test_train_and_score_refuse_a_damaged_lmdb_before_any_work(good, tmp_path, kind, caplog):
    train_lmdb = DAMAGE[kind](good, tmp_path)
    shutil.copytree(good, train_lmdb.parent / "val_lmdb")
    run_dir = tmp_path / "run"
    code = cli.main(["train", "--variant", "lwrefinenet", "--data", str(train_lmdb.parent), "--run-dir", str(run_dir),
                     "--batch-size", "2", "--crop-size", "16", "--iterations", "2"])
    assert code == 1 and not run_dir.exists() and not list(tmp_path.glob(".run*"))
    assert str(train_lmdb) in caplog.text
    caplog.clear()
    code = cli.main(["score", str(tmp_path / "no-model.caffemodel"), "--variant", "lwrefinenet",
                     "--test-lmdb", str(train_lmdb), "--out", str(tmp_path / "scores")])
    assert code == 1 and str(train_lmdb) in caplog.text
