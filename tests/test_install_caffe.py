"""The installer's cache key, its cached and already-installed paths, and its source check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

INSTALLER = REPO / "tools" / "install_caffe.sh"


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mrfnet"
    return Path(os.environ.get("MRFNET_CACHE_DIR", default))


def run_installer(*args: str, installer: Path = INSTALLER, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(installer), "--python", sys.executable, *args],
                          capture_output=True, text=True, env={**os.environ, **env}, check=False)


def test_cache_key_is_stable_and_follows_the_patches(tmp_path):
    first, second = run_installer("--print-key"), run_installer("--print-key")
    assert first.returncode == 0, first.stderr
    key = first.stdout.strip()
    assert len(key) == 16 and int(key, 16) >= 0
    assert second.stdout.strip() == key

    copy = tmp_path / "tools"
    shutil.copytree(REPO / "tools", copy)
    patch = sorted((copy / "caffe-patches").glob("*.patch"))[0]
    patch.write_text(patch.read_text() + "\n")
    changed = run_installer("--print-key", installer=copy / "install_caffe.sh")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() != key


def test_a_second_run_reuses_the_cached_build():
    key = run_installer("--print-key").stdout.strip()
    marker = cache_root() / "caffe" / key / ".complete"
    assert marker.is_file(), "the test command builds Caffe before the tests run"
    before = marker.stat().st_mtime_ns

    result = run_installer()
    assert result.returncode == 0, result.stderr
    assert f"cached build {key} is complete" in result.stderr
    assert "building Caffe" not in result.stderr
    assert marker.stat().st_mtime_ns == before


def test_an_importable_caffe_outside_the_cache_is_used_as_is(tmp_path):
    result = run_installer(MRFNET_CACHE_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "using the Caffe already importable" in result.stderr
    assert not (tmp_path / "caffe").exists(), "nothing may be built"


def test_a_corrupt_source_package_is_refused(tmp_path):
    sources = next((cache_root() / "sources").iterdir())
    copy = tmp_path / "sources" / sources.name
    shutil.copytree(sources, copy)
    tarball = next(copy.glob("*.orig.tar.gz"))
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tarball.write_bytes(bytes(data))

    result = run_installer("--fetch-only", MRFNET_CACHE_DIR=str(tmp_path))
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr


def test_unknown_options_are_rejected():
    result = run_installer("--no-such-option")
    assert result.returncode == 1
    assert "unknown option: --no-such-option" in result.stderr
