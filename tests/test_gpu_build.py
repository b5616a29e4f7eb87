"""The GPU build's configuration (tools/gpu_build.py), on fake CUDA trees: no GPU, no nvcc needed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("gpu_build", REPO / "tools" / "gpu_build.py")
gpu_build = importlib.util.module_from_spec(spec)
sys.modules["gpu_build"] = gpu_build  # dataclasses look their module up there
spec.loader.exec_module(gpu_build)


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fake_toolkit(root: Path, version: int = 13000, with_cudart: bool = True) -> Path:
    """bin/nvcc, include/cuda_runtime_api.h (CUDART_VERSION), lib64/libcudart.so.N."""
    nvcc = touch(root / "bin" / "nvcc", "#!/bin/sh\nexit 1\n")
    nvcc.chmod(0o755)
    touch(root / "include" / "cuda_runtime_api.h", f"#define CUDART_VERSION {version}\n")
    touch(root / "include" / "cuda.h")
    if with_cudart:
        touch(root / "lib64" / f"libcudart.so.{version // 1000}")
    return root


def fake_cu13_wheels(site: Path) -> Path:
    """The layout of the CUDA 13 wheels: nvidia/cu13/{lib,include}, NCCL in nvidia/nccl."""
    for lib in ("libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10"):
        touch(site / "nvidia" / "cu13" / "lib" / lib)
    touch(site / "nvidia" / "cu13" / "include" / "cublas_v2.h")
    touch(site / "nvidia" / "cu13" / "include" / "curand.h")
    touch(site / "nvidia" / "nccl" / "lib" / "libnccl.so.2")
    touch(site / "nvidia" / "nccl" / "include" / "nccl.h")
    return site


def fake_per_component_wheels(site: Path, major: int) -> Path:
    """The layout of the CUDA 12 wheels (and the issue's example): nvidia/<component>/{lib,include}."""
    touch(site / "nvidia" / "cublas" / "lib" / f"libcublas.so.{major}")
    touch(site / "nvidia" / "cublas" / "lib" / f"libcublasLt.so.{major}")
    touch(site / "nvidia" / "cublas" / "include" / "cublas_v2.h")
    touch(site / "nvidia" / "curand" / "lib" / "libcurand.so.10")
    touch(site / "nvidia" / "curand" / "include" / "curand.h")
    touch(site / "nvidia" / "cuda_runtime" / "lib" / f"libcudart.so.{major}")
    touch(site / "nvidia" / "cuda_runtime" / "include" / "cuda_runtime_api.h")
    touch(site / "nvidia" / "nccl" / "lib" / "libnccl.so.2")
    touch(site / "nvidia" / "nccl" / "include" / "nccl.h")
    return site


@pytest.fixture
def no_cuda_env(monkeypatch):
    for var in ("CUDA_HOME", "CUDA_PATH", "MRFNET_CUDA_ARCH", "MRFNET_CUDA_WHEELS"):
        monkeypatch.delenv(var, raising=False)


def resolve(tmp_path: Path, toolkit: Path, site: Path, **kwargs):
    return gpu_build.resolve(cuda_home=str(toolkit), wheel_roots=gpu_build.wheel_roots_from([str(site)]),
                             nvidia_smi=str(tmp_path / "no-nvidia-smi"), search_system=False, **kwargs)


# --- Architectures ---------------------------------------------------------------------------
def test_architecture_lists_are_normalised():
    assert gpu_build.parse_archs("90 8.6, sm_80;compute_75 86") == ["75", "80", "86", "90"]
    with pytest.raises(gpu_build.ConfigError, match="not a CUDA architecture"):
        gpu_build.parse_archs("hopper")


def test_the_architectures_come_from_the_user_then_the_gpus_then_the_default(tmp_path, no_cuda_env, monkeypatch):
    smi = touch(tmp_path / "nvidia-smi", "#!/bin/sh\nprintf '9.0\\n8.6\\n9.0\\n'\n")
    smi.chmod(0o755)
    assert gpu_build.resolve_archs("80 90", 13, str(smi)) == (["80", "90"], "--cuda-arch")
    assert gpu_build.resolve_archs(None, 13, str(smi)) == (["86", "90"], "nvidia-smi")
    assert gpu_build.resolve_archs(None, 13, str(tmp_path / "missing")) == (list(gpu_build.DEFAULT_ARCHS), "default")
    assert gpu_build.DEFAULT_ARCHS == ("75", "80", "86", "89", "90")  # the issue: sm_75..sm_90
    monkeypatch.setenv("MRFNET_CUDA_ARCH", "89")
    assert gpu_build.resolve_archs(None, 13, str(smi)) == (["89"], "MRFNET_CUDA_ARCH")


def test_architectures_too_old_for_the_toolkit_are_refused():
    with pytest.raises(gpu_build.ConfigError, match=r"CUDA 13 cannot compile for sm_61.*sm_75"):
        gpu_build.resolve_archs("61 90", 13, "/nonexistent")
    assert gpu_build.resolve_archs("61", 12, "/nonexistent")[0] == ["61"]


# --- Toolkit and libraries ---------------------------------------------------------------------
def test_libraries_are_found_in_the_cuda13_wheels(tmp_path, no_cuda_env):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0")
    site = fake_cu13_wheels(tmp_path / "site-packages")
    config = resolve(tmp_path, toolkit, site)
    assert config.toolkit.version == "13.0" and config.toolkit.source == "--cuda-home"
    wheel = site / "nvidia"
    expected = {"cudart": toolkit / "lib64" / "libcudart.so.13", "cublas": wheel / "cu13" / "lib" / "libcublas.so.13",
                "cublasLt": wheel / "cu13" / "lib" / "libcublasLt.so.13",
                "curand": wheel / "cu13" / "lib" / "libcurand.so.10", "nccl": wheel / "nccl" / "lib" / "libnccl.so.2"}
    assert {name: Path(lib.path) for name, lib in config.libraries.items()} == expected
    assert config.libraries["nccl"].include_dir == str(wheel / "nccl" / "include")
    assert config.libraries["cublas"].origin == "wheel" and config.libraries["cudart"].origin == "toolkit"
    assert gpu_build.key_lines(config) == [
        "cuda=13.0",
        "libs=cublas:libcublas.so.13 cublasLt:libcublasLt.so.13 cudart:libcudart.so.13 curand:libcurand.so.10 "
        "nccl:libnccl.so.2"]


def test_libraries_are_found_in_per_component_wheels(tmp_path, no_cuda_env):
    toolkit = fake_toolkit(tmp_path / "cuda", with_cudart=False)
    site = fake_per_component_wheels(tmp_path / "site-packages", 13)
    config = resolve(tmp_path, toolkit, site)
    wheel = site / "nvidia"
    assert Path(config.libraries["cublas"].path) == wheel / "cublas" / "lib" / "libcublas.so.13"
    assert Path(config.libraries["cudart"].path) == wheel / "cuda_runtime" / "lib" / "libcudart.so.13"
    assert Path(config.libraries["curand"].include_dir) == wheel / "curand" / "include"


def test_a_library_of_another_cuda_major_is_not_taken(tmp_path, no_cuda_env):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0")
    site = fake_per_component_wheels(tmp_path / "site-packages", 12)  # CUDA 12 wheels beside a CUDA 13 nvcc
    with pytest.raises(gpu_build.ConfigError) as error:
        resolve(tmp_path, toolkit, site)
    message = str(error.value)
    assert "cuBLAS" in message and "CUDA 13" in message
    assert "pip install nvidia-cublas" in message and "MRFNET_CUDA_WHEELS" in message


def test_missing_libraries_name_the_wheels_to_install(tmp_path, no_cuda_env):
    toolkit = fake_toolkit(tmp_path / "cuda-12.4", version=12040)
    with pytest.raises(gpu_build.ConfigError) as error:
        resolve(tmp_path, toolkit, tmp_path / "empty")
    assert "pip install nvidia-cublas-cu12 nvidia-curand-cu12 nvidia-nccl-cu12" in str(error.value)


def test_no_toolkit_says_what_to_install_and_which_variable_to_set(tmp_path, no_cuda_env):
    with pytest.raises(gpu_build.ConfigError) as error:
        gpu_build.find_toolkit(None, [], search_system=False)
    message = str(error.value)
    assert "needs a CUDA toolkit with nvcc" in message
    assert "CUDA_HOME" in message and "--cuda-home" in message and "nvidia-cuda-nvcc" in message
    with pytest.raises(gpu_build.ConfigError, match="is not a CUDA toolkit"):
        gpu_build.find_toolkit(str(tmp_path), [], search_system=False)


def test_the_toolkit_of_an_nvcc_wrapper_script_on_path_is_found(tmp_path, no_cuda_env, monkeypatch):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0")
    wrapper = touch(tmp_path / "bin" / "nvcc", f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    found = gpu_build.find_toolkit(None, [])
    assert found.root == str(toolkit.resolve()) and found.source.startswith("nvcc on PATH")


def test_the_wheel_toolkit_is_the_last_resort(tmp_path, no_cuda_env):
    site = tmp_path / "site-packages"
    fake_toolkit(site / "nvidia" / "cu13", with_cudart=False)
    found = gpu_build.find_toolkit(None, gpu_build.wheel_roots_from([str(site)]), search_system=False)
    assert found.root == str((site / "nvidia" / "cu13").resolve()) and "wheel" in found.source


# --- CMake options and the toolkit view ----------------------------------------------------------
def test_the_cmake_options_select_cuda_without_cudnn_with_nccl(tmp_path, no_cuda_env):
    config = resolve(tmp_path, fake_toolkit(tmp_path / "cuda"), fake_cu13_wheels(tmp_path / "site"),
                     cuda_arch="90 80")
    options = gpu_build.cmake_options(config, "/view")
    for flag in ("-DCPU_ONLY=OFF", "-DUSE_CUDNN=OFF", "-DUSE_NCCL=ON", "-DCUDA_ARCH_NAME=Manual",
                 "-DCUDA_ARCH_BIN=80 90", "-DCUDA_ARCH_PTX=90", "-DCUDA_TOOLKIT_ROOT_DIR=/view",
                 "-DNCCL_LIBRARIES=/view/lib64/libnccl.so", "-DCUDA_cublas_LIBRARY=/view/lib64/libcublas.so"):
        assert flag in options
    paths = [o.split("=", 1)[1] for o in options if "/" in o.split("=", 1)[1]]
    assert paths and all("/view" in p for p in paths), "every path lies in the view (the key leaves it out)"


def test_the_toolkit_view_has_unversioned_links_to_the_wheels(tmp_path, no_cuda_env):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0")
    site = fake_cu13_wheels(tmp_path / "site-packages")
    view = gpu_build.make_toolkit_view(resolve(tmp_path, toolkit, site), tmp_path / "view")
    lib = view / "lib64"
    assert (lib / "libcublas.so").resolve() == (site / "nvidia/cu13/lib/libcublas.so.13").resolve()
    assert (lib / "libcublasLt.so.13").resolve() == (site / "nvidia/cu13/lib/libcublasLt.so.13").resolve()
    assert (lib / "libnccl.so").resolve() == (site / "nvidia/nccl/lib/libnccl.so.2").resolve()
    assert (lib / "libcudart.so").resolve() == (toolkit / "lib64/libcudart.so.13").resolve()
    assert (view / "bin" / "nvcc").resolve() == (toolkit / "bin/nvcc").resolve()
    for header in ("cuda_runtime_api.h", "cublas_v2.h", "curand.h", "nccl.h"):
        assert (view / "include" / header).is_file(), header
    again = gpu_build.make_toolkit_view(resolve(tmp_path, toolkit, site), view)  # re-made in place
    assert (again / "lib64" / "libcurand.so").is_file()


def test_the_command_line_reports_errors_without_a_traceback(tmp_path, no_cuda_env, capsys):
    assert gpu_build.main(["describe", "--cuda-home", str(tmp_path)]) == 2
    assert "gpu_build: error: --cuda-home" in capsys.readouterr().err


# --- mrfnet doctor reads what the GPU build records ----------------------------------------------
def test_doctor_reports_the_gpu_builds_cuda_version_and_arch_list(tmp_path, no_cuda_env):
    from mrfnet.runtime.doctor import _describe_kind, build_kind

    config = resolve(tmp_path, fake_toolkit(tmp_path / "cuda"), fake_cu13_wheels(tmp_path / "site"),
                     cuda_arch="80 90")
    cmake = " ".join(gpu_build.cmake_options(config, "/v"))
    info_text = "\n".join([f"cmake: {cmake} -DBLAS=Open", *gpu_build.describe(config)])
    build = dict(line.split(": ", 1) for line in info_text.splitlines())  # as mrfnet.caffe_env.build_info reads it
    kind = build_kind(build)
    assert kind["gpu"] is True and kind["cuda"] == "13.0" and kind["cuda_arch"] == ["80", "90"] and kind["ptx"] == "90"
    assert kind["cudnn"] is False and kind["nccl"] is True
    assert kind["libraries"]["cublas"].endswith("libcublas.so.13 (wheel)")
    assert _describe_kind(kind) == "GPU build: CUDA 13.0, sm_80 sm_90 + PTX compute_90, cuDNN off, NCCL on"

    cpu = build_kind({"cmake": "-DCPU_ONLY=ON -DBLAS=Open"})
    assert cpu == {"gpu": False, "detail": "CPU-only build"} and _describe_kind(cpu) == "CPU-only build"
    assert build_kind({})["gpu"] is None


def test_running_a_prebuilt_caffe_needs_the_libraries_but_not_their_headers(tmp_path, no_cuda_env):
    toolkit = fake_toolkit(tmp_path / "cuda")
    site = fake_cu13_wheels(tmp_path / "site")
    (site / "nvidia" / "nccl" / "include" / "nccl.h").unlink()  # a runtime-only NCCL
    with pytest.raises(gpu_build.ConfigError, match="NCCL"):
        resolve(tmp_path, toolkit, site)
    config = resolve(tmp_path, toolkit, site, need_headers=False)
    assert config.libraries["nccl"].path == str(site / "nvidia" / "nccl" / "lib" / "libnccl.so.2")


# --- The real GPU build, where one is cached (CI has only the CPU build) ---------------------
NEW_UID = ("import caffe; ids = [caffe.NCCL.new_uid() for _ in range(2)]; "
           "print(len(ids[0]), len(ids[1]), ids[0] != ids[1])")


def cached_gpu_builds_with(patch: str) -> list[Path]:
    """GPU builds in the Caffe cache (tools/install_caffe.sh --gpu) made with GPU patch ``patch``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mrfnet"
    root = Path(os.environ.get("MRFNET_CACHE_DIR", default)) / "caffe"
    found = []
    for info in sorted(root.glob("*/build-info.txt")):
        text = info.read_text()
        gpu_patches = next((line for line in text.splitlines() if line.startswith("gpu patches: ")), "")
        if "-DCPU_ONLY=OFF" in text and patch in gpu_patches.split():
            found.append(info.parent)
    return found


def test_the_gpu_builds_nccl_uid_keeps_all_128_bytes():
    """ncclGetUniqueId needs no GPU (the id is its bootstrap socket's address), so this runs without one."""
    builds = cached_gpu_builds_with("0003-pycaffe-nccl-uid-all-bytes.patch")
    if not builds:
        pytest.skip("no GPU build with gpu/0003 in the Caffe cache (tools/gpu_check.sh bundle makes one)")
    for prefix in builds:
        env = dict(os.environ, PYTHONPATH=str(prefix / "lib" / "python3" / "dist-packages"),
                   LD_LIBRARY_PATH=os.pathsep.join([str(prefix / "lib"), str(prefix / "cuda" / "lib64")]))
        done = subprocess.run([sys.executable, "-c", NEW_UID], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, f"{prefix}: {done.stderr[-2000:]}"
        assert done.stdout.split() == ["128", "128", "True"], prefix  # unpatched: cut at the first NUL (9 bytes here)
