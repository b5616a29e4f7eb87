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


def test_one_line_refusals_of_issue_24_item_7(tmp_path, caplog):
    """A damaged options.json names itself; `score --out` an existing file is refused before any work;
    a multi-frame image is refused (OpenCV would take its first frame silently); GIFs left out of a
    folder scan are named."""
    from PIL import Image

    from data_prep.images import ImageError, find_images, load_image
    from mrfnet.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "options.json").write_text("{not json")
    assert main(["train", "--run-dir", str(run), "--resume"]) == 1
    assert f"{run / 'options.json'} is damaged" in caplog.text
    taken = tmp_path / "taken"
    taken.write_text("x")
    assert main(["score", str(tmp_path / "m.caffemodel"), "--blur-dir", str(tmp_path), "--sharp-dir",
                 str(tmp_path), "--out", str(taken)]) == 1
    assert f"--out {taken} is a file" in caplog.text
    frames = [Image.fromarray(np.full((8, 8, 3), value, np.uint8)) for value in (0, 120, 240)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError, match="has 3 frames"):
        load_image(tmp_path / "anim.gif")
    folder = tmp_path / "images"
    folder.mkdir()
    write_png(folder / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "anim.gif").rename(folder / "anim.gif")
    assert list(find_images(folder)) == ["a.png"]
    assert "1 GIF file(s) under" in caplog.text and "anim.gif" in caplog.text
