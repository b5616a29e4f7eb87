"""Held-out pairs to score on: a test LMDB or a blur/sharp folder pair."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.images import find_images, image_key, match_pairs, read_image
from data_prep.records import check_pairs, iter_pairs
from mrfnet.runtime.errors import InvalidValue

log = logging.getLogger(__name__)


GENERIC_LMDB_NAMES = ("test_lmdb", "val_lmdb", "train_lmdb")


class TestSet:
    """Blurred/sharp pairs in a fixed order, with a name for tables and a fingerprint of their content."""

    name: str
    source: str

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        raise NotImplementedError


class LmdbTestSet(TestSet):
    """A data_prep LMDB (raw 6-channel pair Datums), read in key order."""

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        self.path = Path(path)
        self.records = check_pairs(self.path)  # damaged, foreign or empty: one clear error naming it
        self.source = str(self.path.resolve())
        generic = self.path.name in GENERIC_LMDB_NAMES
        self.name = name or (self.path.resolve().parent.name if generic else self.path.name)

    def __len__(self) -> int:
        return self.records

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        yield from iter_pairs(self.path)


class FolderTestSet(TestSet):
    """Two folders of images, paired by relative path without suffix (a.png pairs with a.png or a.jpg)."""

    def __init__(self, blur_dir: str | Path, sharp_dir: str | Path, name: str | None = None) -> None:
        self.blur_dir, self.sharp_dir = Path(blur_dir), Path(sharp_dir)
        pairs = match_pairs(find_images(self.blur_dir), find_images(self.sharp_dir))
        self.pairs = sorted((image_key(relative), blur, sharp) for relative, blur, sharp in pairs)
        self.source = f"{self.blur_dir.resolve()} | {self.sharp_dir.resolve()}"
        self.name = name or _common_name(self.blur_dir, self.sharp_dir)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for key, blur_path, sharp_path in self.pairs:
            blur, sharp = read_image(blur_path)[0], read_image(sharp_path)[0]
            if blur.shape != sharp.shape:
                raise InvalidValue(f"{blur_path} ({blur.shape[1]}x{blur.shape[0]}) and {sharp_path} "
                                 f"({sharp.shape[1]}x{sharp.shape[0]}) differ in size")
            yield key, blur, sharp


def _common_name(blur_dir: Path, sharp_dir: Path) -> str:
    blur_dir, sharp_dir = blur_dir.resolve(), sharp_dir.resolve()
    return blur_dir.parent.name if blur_dir.parent == sharp_dir.parent else blur_dir.name


def open_test_set(*, test_lmdb: str | Path | None = None, blur_dir: str | Path | None = None,
                  sharp_dir: str | Path | None = None, name: str | None = None) -> TestSet:
    """The test set from an LMDB or from a pair of folders (exactly one of the two)."""
    if test_lmdb is not None and (blur_dir is not None or sharp_dir is not None):
        raise InvalidValue("give either a test LMDB or --blur-dir/--sharp-dir, not both")
    if test_lmdb is not None:
        return LmdbTestSet(test_lmdb, name)
    if blur_dir is None or sharp_dir is None:
        raise InvalidValue("a test set needs --test-lmdb, or both --blur-dir and --sharp-dir")
    return FolderTestSet(blur_dir, sharp_dir, name)
