"""Files the project writes are whole or absent, and a full disk is said as such (issue 24).

The full disk is a file-size limit (RLIMIT_FSIZE, in a child process that ignores SIGXFSZ, so a write
past it fails with EFBIG as one past a full disk fails with ENOSPC): the PNG is not written, no
temporary file is left, and an older file of that name is byte-identical afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from data_prep.atomic import DiskFull, write_atomic
from data_prep.images import write_png

SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    from data_prep.atomic import DiskFull
    from data_prep.images import write_png
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # ~200 KB as PNG
    try:
        write_png(sys.argv[1], noise)
    except DiskFull as exc:
        print(exc)
        sys.exit(3)
""")


def test_a_png_that_does_not_fit_leaves_the_old_file_and_no_partial(tmp_path):
    target = tmp_path / "out.png"
    write_png(target, np.zeros((8, 8, 3), np.uint8))
    before = target.read_bytes()
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(target)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert f"no room to write {target}" in done.stdout and "the disk is full" in done.stdout
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_write_atomic_replaces_whole_files_and_keeps_other_errors(tmp_path):
    target = tmp_path / "a.bin"
    write_atomic(target, b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(FileNotFoundError):  # not a full disk: the error as it is
        write_atomic(tmp_path / "missing" / "b.bin", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    assert issubclass(DiskFull, OSError)
