"""Files written whole or not at all, and a full disk said as such (issue 24).

Every file goes to a hidden temporary sibling first (same folder, so same filesystem), is flushed to
disk with fsync and renamed over the final name: a reader, a crash or a full disk never leaves a
truncated file under the final name, and an older file of that name stays as it was until the new
one is complete. LMDBs (data_prep.build's staging folder) and Caffe's snapshots (patch 0006) follow
the same rule their own way.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# what a write fails with when the disk (or the user's quota, or RLIMIT_FSIZE) has no room
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFull(OSError):
    """A write found no room; nothing was left under the file's name."""


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all (DiskFull, naming the path, when there is no room)."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in NO_ROOM:
            raise DiskFull(exc.errno, f"no room to write {path} ({os.strerror(exc.errno)}): the disk is full; "
                                      "nothing was written under that name") from None
        raise
    return path
