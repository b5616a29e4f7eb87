"""One writer per run folder: an exclusive ``flock`` on the folder itself, held while a command writes it.

The lock is taken on the directory (an ``O_DIRECTORY`` descriptor), so it writes nothing into the folder,
follows it through the rename that turns a run's hidden ``.NAME.partial`` into ``NAME``, and is
released by the kernel when its holder dies in any way (no stale lock file to clean up). A second
writer is refused at once with the holder's PID and command, which Linux lists in ``/proc/locks``.
Readers (``mrfnet score``, ``deblur`` of a run) take no lock: snapshots and progress files are
replaced by rename, so a reader sees whole files (docs/architecture.md, "Failure modes").
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

# (st_dev, st_ino) of each folder this process holds -> its descriptor: a second hold of the same
# folder in this process (a new run's folder, then its training) is the same lock, not a conflict
_HELD: dict[tuple[int, int], int] = {}


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock."""


def _holder(status: os.stat_result) -> str:
    """'PID n (command)' of the process holding an flock on the inode of ``status``, from /proc/locks."""
    inode = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "another process"
    for line in lines:
        fields = line.split()
        if "FLOCK" in fields and inode in fields:
            pid = fields[fields.index(inode) - 1]
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                command = "?"
            return f"PID {pid} ({command.strip()})"
    return "another process"


def hold(folder: Path) -> tuple[int, int]:
    """Take ``folder``'s lock for this process (kept until released or the process ends); its key.

    Raises FolderBusy, naming the holder, when another process has it.
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    status = os.fstat(fd)
    key = (status.st_dev, status.st_ino)
    if key in _HELD:
        os.close(fd)
        return key
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderBusy(f"{folder} is in use by {_holder(status)}: wait for it to finish, or stop it "
                         "first") from None
    _HELD[key] = fd
    log.debug("holding %s", folder)
    return key


def release(key: tuple[int, int]) -> None:
    """Give up the lock ``hold`` returned ``key`` for (a no-op when not held; the folder may be gone)."""
    fd = _HELD.pop(key, None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor releases the flock


@contextmanager
def holding(folder: Path) -> Iterator[None]:
    """``folder``'s lock for the body (already held by this process: kept, and released at the end)."""
    key = hold(folder)
    try:
        yield
    finally:
        release(key)
