"""Files written whole or not at all, and a full disk said as such (issue 24).

Every file goes to a hidden temporary sibling first (same folder, so same filesystem), is flushed to
disk with fsync and renamed over the final name: a reader, a crash or a full disk never leaves a
truncated file under the final name, and an older file of that name stays as it was until the new
one is complete. LMDBs (data_prep.build's staging folder) and Caffe's snapshots (patch 0006) follow
the same rule their own way. This module is the one home of that rule: ``write_atomic`` and
``write_text_atomic`` for data in memory, ``atomic_output`` for writers that want a file name
(matplotlib's savefig), ``reporting_no_room`` around writes of other kinds (``no_room`` words their
one line), and ``check_free_space`` before a long write whose size is known.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# what a write fails with when the disk (or the user's quota, or RLIMIT_FSIZE) has no room
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# What check_free_space keeps free beyond a write's estimate: room for the filesystem's own
# bookkeeping and for the small files written beside the big one, so the estimate need not be exact.
FREE_SPACE_MARGIN = 64 << 20


def free_bytes(path: str | Path) -> int:
    """Free space, for this user, on the filesystem that holds ``path`` (or would: its nearest existing folder)."""
    folder = Path(path).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def format_bytes(count: int) -> str:
    """A size as people read it in a message: MB below a gigabyte, GB above."""
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


class DiskFull(OSError):
    """A write found no room (full disk, quota, file-size limit); nothing was left under the file's name.

    Raised as ``DiskFull(errno, message)`` with a one-line message that names the file, for the
    command line to print as it is (mrfnet.cli); ``no_room`` words the usual one. ``reason``, the
    low-level cause, lets a caller name the output the user asked for instead of the file inside it
    that failed (data-prep's LMDBs: ``reporting_no_room``).
    """

    def __init__(self, code: int, message: str, *, reason: str | None = None) -> None:
        super().__init__(code, message)
        self.reason = reason

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28] " prefix
        return self.strerror


def no_room(path: str | Path, reason: str, code: int = errno.ENOSPC) -> DiskFull:
    """The DiskFull for a write to ``path`` that failed for want of room, naming the space free there."""
    return DiskFull(code, f"no room to write {path} ({reason}; {format_bytes(free_bytes(path))} free there): the "
                          "disk is full, or a quota or file-size limit refused the write; nothing was written under "
                          "that name", reason=reason)


def check_free_space(path: str | Path, needed: int) -> None:
    """Refuse (DiskFull, one line) a write of about ``needed`` bytes to ``path`` that cannot fit.

    Hours of data-prep that end in a full disk are worse than a refusal up front; the margin
    (FREE_SPACE_MARGIN) covers what the estimate leaves out.
    """
    free = free_bytes(path)
    if free < needed + FREE_SPACE_MARGIN:
        raise DiskFull(errno.ENOSPC, f"not enough free space to write {path}: it needs about {format_bytes(needed)} "
                                     f"plus {format_bytes(FREE_SPACE_MARGIN)} to spare, and {format_bytes(free)} are "
                                     "free there; free some space or write elsewhere")


@contextmanager
def reporting_no_room(path: str | Path) -> Iterator[None]:
    """Report any failure for want of room inside the block as one DiskFull naming ``path``.

    An OSError with a NO_ROOM errno, or a ``no_room`` DiskFull about a file inside ``path``, becomes
    a DiskFull about ``path`` itself, the output the user asked for; every other error passes as it is.
    """
    try:
        yield
    except DiskFull as exc:
        if exc.reason is None:  # worded by its raiser, as it wanted
            raise
        raise no_room(path, exc.reason, exc.errno) from None
    except OSError as exc:
        if exc.errno in NO_ROOM:
            raise no_room(path, os.strerror(exc.errno), exc.errno) from None
        raise


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write to; once the block ends it is fsynced and renamed to ``path``.

    On any failure (a DiskFull naming ``path`` when there is no room) the temporary file is removed
    and an older ``path`` stays as it was. The temporary name keeps ``path``'s suffix, so writers
    that choose a format by it (matplotlib's savefig, PIL) still do.
    """
    path = Path(path)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        with reporting_no_room(path):
            yield partial
            descriptor = os.open(partial, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all (DiskFull, naming the path, when there is no room)."""
    with atomic_output(path) as partial:
        partial.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` whole or not at all, newlines as given (a CSV's \\r\\n stays)."""
    return write_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON, whole or not at all (run folders' options.json and best.json, reports' JSON)."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")
