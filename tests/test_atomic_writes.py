"""Files the project writes are whole or absent, and a full disk is said as such (issue 24).

The full disk is a file-size limit (RLIMIT_FSIZE, in a child process that ignores SIGXFSZ, so a write
past it fails with EFBIG as one past a full disk fails with ENOSPC; LMDB turns its short write into
EIO): the file is not written, no temporary file or staging folder is left, and an older file of that
name is byte-identical afterwards.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from image_files import random_image, write_image

from data_prep.atomic import DiskFull, atomic_output, check_free_space, free_bytes, write_atomic
from data_prep.images import write_png
from mrfnet.cli import main

# The line a failed write ends with; the reason in brackets is the system's (or LMDB's) own.
NO_ROOM_LINE = (r"{path} \(({reasons}); [\d.]+ [MG]B free there\): the disk is full, or a quota or file-size limit "
                r"refused the write; nothing was written under that name")
CAFFE_LOG = "".join(f"I0101 00:00:00.000000  1 solver.cpp:218] Iteration {i} (1 iter/s, 1s/2 iters), loss = {loss}\n"
                    f"I0101 00:00:00.000000  1 sgd_solver.cpp:105] Iteration {i}, lr = 0.01\n"
                    for i, loss in ((0, 1.5), (2, 1.2), (4, 0.9)))

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


def run_cli_with_file_size_limit(argv: list[str], limit: int) -> subprocess.CompletedProcess:
    """`mrfnet ARGV` in a child whose every file is limited to ``limit`` bytes: a full disk, for one process."""
    return subprocess.run([sys.executable, "-m", "mrfnet.cli", *argv], capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one ERROR line of a command's log, its message alone; no traceback beside it."""
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1, output
    return errors[0].split(" ERROR mrfnet: ", 1)[1]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_check_free_space_refuses_a_need_beyond_the_free_space(tmp_path):
    target = tmp_path / "not" / "made" / "yet"  # the check looks at the nearest existing folder
    check_free_space(target, 1 << 20)
    free = free_bytes(tmp_path)
    with pytest.raises(DiskFull) as refused:  # one line on the command line
        check_free_space(target, free + (1 << 40))
    assert re.fullmatch(rf"not enough free space to write {re.escape(str(target))}: it needs about [\d.]+ GB plus "
                        r"67\.1 MB to spare, and [\d.]+ [MG]B are free there; free some space or write elsewhere",
                        str(refused.value))
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_keeps_the_suffix_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "figure.png"
    with atomic_output(target) as partial:
        assert partial.parent == tmp_path and partial.suffix == ".png" and partial.name.startswith(".")
        partial.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError), atomic_output(target) as partial:
        partial.write_bytes(b"half")
        raise RuntimeError("the writer failed")
    assert tree(tmp_path) == {"figure.png": b"new"}


def test_data_prep_on_a_full_disk_is_one_line_and_keeps_the_older_output(tmp_path):
    root = tmp_path / "images"
    for index in range(6):
        write_image(root / f"img{index}.png", random_image(40, 50, seed=index))
    out = tmp_path / "out"
    argv = ["data-prep", "--source", "visdrone", "--root", str(root), "--out", str(out), "--patch-size", "16",
            "--workers", "1", "--val-fraction", "0", "--test-fraction", "0"]
    assert main(argv) == 0
    before = tree(out)
    done = run_cli_with_file_size_limit([*argv, "--force", "--seed", "3"], 32 << 10)  # data.mdb is ~200 KB
    assert done.returncode == 1
    reasons = "mdb_txn_commit: Input/output error|mdb_txn_commit: File too large"
    assert re.fullmatch("no room to write " + NO_ROOM_LINE.format(path=re.escape(str(out)), reasons=reasons),
                        error_line(done))
    assert tree(out) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["images", "out"]  # no out.partial, no out.old


def test_plot_log_on_a_full_disk_keeps_the_previous_figure(tmp_path):
    (tmp_path / "caffe.log").write_text(CAFFE_LOG)
    (tmp_path / "log.png").write_bytes(b"the previous figure")
    done = run_cli_with_file_size_limit(["plot-log", str(tmp_path)], 8 << 10)  # the CSV fits, the PNG does not
    assert done.returncode == 1
    assert re.fullmatch("no room to write " + NO_ROOM_LINE.format(path=re.escape(str(tmp_path / "log.png")),
                                                                  reasons="File too large"), error_line(done))
    assert tree(tmp_path) == {"caffe.log": CAFFE_LOG.encode(), "log.png": b"the previous figure",
                              "train.csv": b"iteration,loss,lr\r\n0,1.5,0.01\r\n2,1.2,0.01\r\n4,0.9,0.01\r\n"}
