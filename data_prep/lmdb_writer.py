"""Writing one LMDB of pair records safely: atomic, growing, with a meta_info file.

The LMDB is written under ``<path>.partial`` and renamed to ``<path>`` only after its last commit,
so an interrupted build never leaves a finished-looking LMDB (a stale ``.partial`` is removed by
the next writer of the same path). Records are committed in batches; when a batch hits
``lmdb.MapFullError`` the map size is doubled and the batch is retried, so the map can start
small. ``meta_info.jsonl`` inside the LMDB folder (Caffe reads only data.mdb) has one JSON line
per record, sorted by key, with its source files, size and blur parameters. A write that finds no
room (py-lmdb's error names no errno, only its text) is a one-line DiskFull naming the LMDB, and
nothing is left behind (issue 24).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import lmdb

from data_prep.atomic import NO_ROOM, no_room, reporting_no_room, write_text_atomic
from data_prep.errors import DataError, DataExists

log = logging.getLogger(__name__)

DEFAULT_MAP_SIZE = 64 << 20  # bytes; doubled on demand
COMMIT_EVERY = 128  # records per write transaction
MAX_KEY_BYTES = 511  # LMDB's default key size limit
META_INFO = "meta_info.jsonl"
PAGE_SIZE = 4096  # LMDB's page: the OS page on x86-64 and arm64 Linux
# Besides its value, a record costs its key and node in leaf pages that inserts in random key order
# leave about half full, and its line in meta_info.jsonl (a few hundred bytes): this bounds both.
RECORD_OVERHEAD = 2048
# py-lmdb's text for a write that found no room; LMDB turns a short write (what a full disk gives)
# into EIO ("short write, filesystem full?" in mdb.c), so EIO from a write is read as no room too.
LMDB_NO_ROOM = {os.strerror(code): code for code in NO_ROOM} | {os.strerror(errno.EIO): errno.ENOSPC}


@dataclass(frozen=True)
class WriterStats:
    """What one finished LMDB holds."""

    path: Path
    records: int
    bytes: int  # size of data.mdb on disk
    map_size: int
    map_grows: int


def record_footprint(value_bytes: int) -> int:
    """About the most disk one record of ``value_bytes`` takes, so a build can check its room before it starts.

    LMDB keeps a value larger than half a page in overflow pages of its own (a page header, then the
    value, in whole pages); a smaller one shares a leaf page that may be half empty.
    """
    if value_bytes > PAGE_SIZE // 2:
        return -(-(value_bytes + 16) // PAGE_SIZE) * PAGE_SIZE + RECORD_OVERHEAD
    return 2 * value_bytes + RECORD_OVERHEAD


@contextmanager
def reporting_lmdb_no_room(path: Path) -> Iterator[None]:
    """As data_prep.atomic.reporting_no_room, for LMDB's errors too: no room -> DiskFull naming ``path``."""
    try:
        with reporting_no_room(path):
            yield
    except lmdb.Error as exc:
        text = str(exc)
        code = errno.ENOSPC if isinstance(exc, lmdb.DiskError) else next(
            (code for message, code in LMDB_NO_ROOM.items() if text.endswith(message)), None)
        if code is None:
            raise
        raise no_room(path, text, code) from None


def partial_path(path: Path) -> Path:
    """Where ``path`` is built until it is complete."""
    return path.with_name(path.name + ".partial")


def replace_dir(source: Path, target: Path) -> None:
    """Move a finished folder to ``target``, replacing what is there only once the new one is in place."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    source.rename(target)
    if old.exists():
        shutil.rmtree(old)


class LmdbWriter:
    """Write ``(key, value, meta)`` records into a new LMDB at ``path``; use it as a context manager.

    ``force`` allows replacing an existing ``path`` (the old one stays until the new one is complete).
    """

    def __init__(self, path: str | Path, *, map_size: int = DEFAULT_MAP_SIZE, commit_every: int = COMMIT_EVERY,
                 force: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not force:
            raise DataExists(f"{self.path} exists; pass --force to replace it")
        self.partial = partial_path(self.path)
        if self.partial.exists():
            log.warning("removing %s left by an interrupted build", self.partial)
            shutil.rmtree(self.partial)
        self.map_size = map_size
        self.map_grows = 0
        self.commit_every = commit_every
        try:
            with reporting_lmdb_no_room(self.path):
                self.partial.mkdir(parents=True)
                self.env = lmdb.open(str(self.partial), map_size=map_size, subdir=True, sync=False, meminit=False)
        except BaseException:
            shutil.rmtree(self.partial, ignore_errors=True)
            raise
        self.pending: list[tuple[bytes, bytes]] = []
        self.meta: dict[str, dict[str, Any]] = {}
        self.stats: WriterStats | None = None  # set by close()

    def put(self, key: str, value: bytes, meta: dict[str, Any] | None = None) -> None:
        """Queue one record; keys must be unique (Caffe reads records in key order)."""
        encoded = key.encode()
        if len(encoded) > MAX_KEY_BYTES:
            raise DataError(f"record key of {len(encoded)} bytes is longer than LMDB's {MAX_KEY_BYTES}: {key}")
        if key in self.meta:
            raise DataError(f"duplicate record key {key}")
        self.meta[key] = {"key": key, **(meta or {})}
        self.pending.append((encoded, value))
        if len(self.pending) >= self.commit_every:
            self._commit()

    def _commit(self) -> None:
        while True:
            try:
                with reporting_lmdb_no_room(self.path), self.env.begin(write=True) as txn:  # aborted on any error
                    for key, value in self.pending:
                        txn.put(key, value)
                break
            except lmdb.MapFullError:
                self.map_size *= 2
                self.map_grows += 1
                log.debug("%s: map full, growing it to %d MiB", self.path, self.map_size >> 20)
                self.env.set_mapsize(self.map_size)
        self.pending.clear()

    def close(self) -> WriterStats:
        """Commit what is left, write meta_info, and move the LMDB into place."""
        self._commit()
        with reporting_lmdb_no_room(self.path):
            self.env.sync(True)
            self.env.close()
            write_text_atomic(self.partial / META_INFO, "".join(json.dumps(self.meta[key], ensure_ascii=False) + "\n"
                                                                for key in sorted(self.meta)))
        replace_dir(self.partial, self.path)
        self.stats = WriterStats(self.path, len(self.meta), (self.path / "data.mdb").stat().st_size, self.map_size,
                                 self.map_grows)
        return self.stats

    def abort(self) -> None:
        """Drop everything written: no ``path`` appears and the partial folder is removed."""
        self.env.close()
        shutil.rmtree(self.partial, ignore_errors=True)

    def __enter__(self) -> LmdbWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:  # a full disk at the last commit or at meta_info: nothing half-written stays
            self.abort()
            raise
