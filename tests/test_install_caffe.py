"""The installer's cache key, its cached and already-installed paths, and its source check."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_the_baseline_build_has_only_the_patches_caffe_needs_here_and_its_own_key(tmp_path):
    """--baseline: BVLC Caffe as it builds here, for side-by-side benchmarks (no OpenMP, no lean patches)."""
    full, baseline = run_installer("--print-config"), run_installer("--print-config", "--baseline")
    assert full.returncode == 0 and baseline.returncode == 0, full.stderr + baseline.stderr
    assert "mode: cpu (baseline)" in baseline.stdout and "-DUSE_OPENMP=ON" not in baseline.stdout
    baseline_patches = "0001-protobuf-one-argument-bytes-limit.patch 0002-numpy2-scikit-image-io.patch"
    assert f"patches: {baseline_patches}\n" in baseline.stdout
    assert "-DUSE_OPENMP=ON" in full.stdout and "0004-shared-col-workspace.patch" in full.stdout
    keys = {run_installer("--print-key", *extra).stdout.strip() for extra in ((), ("--baseline",))}
    assert len(keys) == 2

    copy = tmp_path / "tools"  # a change to a patch outside the baseline leaves the baseline's key as it is
    shutil.copytree(REPO / "tools", copy)
    lean = copy / "caffe-patches" / "0005-share-test-blobs.patch"
    lean.write_text(lean.read_text() + "\n")
    changed = run_installer("--print-key", "--baseline", installer=copy / "install_caffe.sh")
    assert changed.stdout.strip() in keys and changed.stdout.strip() != run_installer("--print-key").stdout.strip()


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


# --- --gpu: configuration, keys, patches (no GPU, no build: --print-config and --print-key) --------
GPU_PATCHES = sorted((REPO / "tools" / "caffe-patches" / "gpu").glob("*.patch"))


def fake_cuda(tmp_path: Path) -> dict[str, str]:
    """A fake CUDA 13 toolkit and nvidia-* wheels; the installer's arguments and environment for them."""
    from test_gpu_build import fake_cu13_wheels, fake_toolkit

    toolkit = fake_toolkit(tmp_path / "cuda-13.0")
    site = fake_cu13_wheels(tmp_path / "site-packages")
    return {"toolkit": str(toolkit), "MRFNET_CUDA_WHEELS": str(site)}


def run_gpu(cuda: dict[str, str], *args: str, installer: Path = INSTALLER) -> subprocess.CompletedProcess:
    return run_installer("--gpu", "--cuda-home", cuda["toolkit"], *args, installer=installer,
                         MRFNET_CUDA_WHEELS=cuda["MRFNET_CUDA_WHEELS"], MRFNET_CUDA_ARCH="")


def test_gpu_flags_are_cuda_without_cudnn_with_nccl_and_the_arch_list(tmp_path):
    cuda = fake_cuda(tmp_path)
    result = run_gpu(cuda, "--cuda-arch", "80 9.0", "--print-config")
    assert result.returncode == 0, result.stderr
    options = [line.strip() for line in result.stdout.splitlines() if line.startswith("  -D")]
    for flag in ("-DCPU_ONLY=OFF", "-DUSE_CUDNN=OFF", "-DUSE_NCCL=ON", "-DCUDA_ARCH_NAME=Manual",
                 "-DCUDA_ARCH_BIN=80 90", "-DCUDA_ARCH_PTX=90", "-DBUILD_python_layer=ON"):
        assert flag in options, flag
    assert "-DCPU_ONLY=ON" not in options
    assert "mode: gpu" in result.stdout and "cuda arch: 80 90 (from --cuda-arch)" in result.stdout
    wheel_lib = Path(cuda["MRFNET_CUDA_WHEELS"]) / "nvidia" / "cu13" / "lib"
    assert f"library cublas: {wheel_lib / 'libcublas.so.13'} (wheel)" in result.stdout
    assert "gpu patches: " + " ".join(p.name for p in GPU_PATCHES) in result.stdout

    if shutil.which("nvidia-smi") is None:  # no GPU to ask: the default list
        default = run_gpu(cuda, "--print-config")
        assert default.returncode == 0, default.stderr
        assert "  -DCUDA_ARCH_BIN=75 80 86 89 90\n" in default.stdout
        assert "(from default)" in default.stdout

    cpu = run_installer("--print-config")
    assert cpu.returncode == 0, cpu.stderr
    assert "  -DCPU_ONLY=ON\n" in cpu.stdout and "CUDA" not in cpu.stdout and "mode: cpu" in cpu.stdout


@pytest.mark.slow
def test_the_gpu_key_differs_from_the_cpu_key_and_follows_the_arch_list_and_gpu_patches(tmp_path):
    cuda = fake_cuda(tmp_path)
    cpu_key = run_installer("--print-key").stdout.strip()
    keys = [run_gpu(cuda, "--cuda-arch", arch, "--print-key") for arch in ("90", "90", "80 90")]
    assert all(k.returncode == 0 for k in keys), keys[0].stderr
    key_90, again, key_80_90 = (k.stdout.strip() for k in keys)
    assert len(key_90) == 16 and key_90 == again
    assert len({cpu_key, key_90, key_80_90}) == 3

    copy = tmp_path / "tools"
    shutil.copytree(REPO / "tools", copy, ignore=shutil.ignore_patterns("__pycache__"))
    gpu_patch = sorted((copy / "caffe-patches" / "gpu").glob("*.patch"))[0]
    gpu_patch.write_text(gpu_patch.read_text() + "\n")
    changed = run_gpu(cuda, "--cuda-arch", "90", "--print-key", installer=copy / "install_caffe.sh")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() != key_90
    cpu_copy = run_installer("--print-key", installer=copy / "install_caffe.sh")
    assert cpu_copy.stdout.strip() == cpu_key, "the GPU patches are not part of the CPU build"


def test_gpu_without_cuda_says_what_to_install(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_installer("--gpu", "--cuda-home", str(empty), "--print-config")
    assert result.returncode == 1
    assert "is not a CUDA toolkit" in result.stderr and "bin/nvcc" in result.stderr

    toolkit_only = fake_cuda(tmp_path)
    result = run_installer("--gpu", "--cuda-home", toolkit_only["toolkit"], "--print-config",
                           MRFNET_CUDA_WHEELS=str(empty))
    if importlib.util.find_spec("nvidia") is None:  # no real nvidia-* wheels in this environment
        assert result.returncode == 1
        assert "pip install nvidia-cublas" in result.stderr and "MRFNET_CUDA_WHEELS" in result.stderr
        assert "the GPU build cannot be configured" in result.stderr

    result = run_installer("--cuda-arch", "90", "--print-key")
    assert result.returncode == 1 and "--cuda-arch and --cuda-home need --gpu" in result.stderr


def test_every_gpu_patch_has_a_reason_and_applies_to_the_cached_source(tmp_path):
    assert len(GPU_PATCHES) >= 2
    for patch_file in GPU_PATCHES:
        first, second = patch_file.read_text().splitlines()[:2]
        assert first.startswith("Reason: ") and len(first) > len("Reason: ") + 20 and second == "", patch_file.name

    sources = next((cache_root() / "sources").iterdir())  # the test command builds the CPU Caffe first
    tree = tmp_path / "src"
    tree.mkdir()
    for pattern, flags in (("*.orig.tar.gz", "-xzf"), ("*.debian.tar.xz", "-xJf")):
        subprocess.run(["tar", flags, str(next(sources.glob(pattern))), "-C", str(tree)], check=True)

    def apply(patch_file: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(["patch", "-d", str(tree), "-p1", "-s", *extra], stdin=patch_file.open(),
                              capture_output=True, text=True, check=False)

    series = (tree / "debian" / "patches" / "series").read_text().split()
    for name in [n for n in series if not n.startswith("#")]:
        assert apply(tree / "debian" / "patches" / name).returncode == 0, name
    for patch_file in sorted((REPO / "tools" / "caffe-patches").glob("*.patch")):
        assert apply(patch_file).returncode == 0, patch_file.name
    for patch_file in GPU_PATCHES:
        dry = apply(patch_file, "--dry-run")
        assert dry.returncode == 0, f"{patch_file.name}: {dry.stdout}{dry.stderr}"
        assert apply(patch_file).returncode == 0, patch_file.name  # the next one applies on top of it
    common = (tree / "src" / "caffe" / "common.cpp").read_text()
    assert "prop.kernelExecTimeoutEnabled" not in common and "cudaDevAttrKernelExecTimeout" in common
    cuda_cmake = (tree / "cmake" / "Cuda.cmake").read_text()
    assert 'set(Caffe_known_gpu_archs "75 80 86 89 90")' in cuda_cmake
