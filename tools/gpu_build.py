#!/usr/bin/env python3
"""CUDA configuration of the GPU Caffe build (`tools/install_caffe.sh --gpu`).

Resolves, without building anything:

- the CUDA architectures: ``--cuda-arch`` (or ``MRFNET_CUDA_ARCH``), else the machine's GPUs as
  ``nvidia-smi --query-gpu=compute_cap`` lists them, else DEFAULT_ARCHS (sm_75..sm_90);
- the CUDA toolkit holding nvcc: ``--cuda-home``, ``CUDA_HOME``, ``CUDA_PATH``, the toolkit of
  the ``nvcc`` on PATH, ``/usr/local/cuda``, ``/usr/local/cuda-*`` (newest first), or the
  ``nvidia-cuda-nvcc`` wheel;
- the libraries Caffe links (cudart, cuBLAS with cuBLASLt, cuRAND, NCCL) and their headers: from
  the toolkit, from the nvidia-* pip wheels (CUDA 13 wheels put them in ``nvidia/cu13/lib``,
  CUDA 12 wheels in ``nvidia/<component>/lib``, NCCL in ``nvidia/nccl/lib``) found on this
  interpreter's ``sys.path`` or in ``MRFNET_CUDA_WHEELS``, or from the system's library folders.

The wheels ship only versioned names (``libcublas.so.13``), and CMake's FindCUDA wants one toolkit
folder with nvcc, the headers and unversioned libraries, so ``toolkit-view DEST`` makes such a
folder of symbolic links (``bin``, ``nvvm`` -> the toolkit's; ``include`` and ``lib64`` merge the
toolkit's and the libraries' entries and add the unversioned names). The CMake options point at
that view; the installed binaries get it in their RPATH.

Standard library only: it runs under the environment's interpreter, whatever that has installed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_ARCHS = ("75", "80", "86", "89", "90")
# The oldest architecture each CUDA major version still compiles for.
MIN_ARCH = {10: 30, 11: 35, 12: 50, 13: 75}
SYSTEM_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib", "/lib/x86_64-linux-gnu")
SYSTEM_INCLUDE_DIRS = ("/usr/include", "/usr/local/include")


class ConfigError(RuntimeError):
    """The GPU build cannot be configured; the message says what to install or set."""


@dataclass
class Library:
    name: str          # "cublas"
    path: str          # the file CMake links (may be versioned: libcublas.so.13)
    soname: str        # its file name
    origin: str        # "toolkit", "wheel" or "system"
    header: str = ""   # the header that proves its include folder, if it has one
    include_dir: str = ""


@dataclass
class Toolkit:
    root: str
    nvcc: str
    version: str       # "13.0"
    source: str        # how it was found


@dataclass
class Config:
    toolkit: Toolkit
    archs: list[str]
    arch_source: str
    ptx: str
    libraries: dict[str, Library] = field(default_factory=dict)
    wheel_roots: list[str] = field(default_factory=list)


# What Caffe links, with the header that goes with it ("" for a library whose headers come with
# another one's), and where the pip wheels put it: {cuda_major} is the toolkit's major version.
COMPONENTS = {
    "cudart": ("cuda_runtime_api.h", ("cu{cuda_major}", "cuda_runtime"), "nvidia-cuda-runtime"),
    "cublas": ("cublas_v2.h", ("cu{cuda_major}", "cublas"), "nvidia-cublas"),
    "cublasLt": ("", ("cu{cuda_major}", "cublas"), "nvidia-cublas"),
    "curand": ("curand.h", ("cu{cuda_major}", "curand"), "nvidia-curand"),
    "nccl": ("nccl.h", ("nccl", "cu{cuda_major}"), "nvidia-nccl-cu{cuda_major}"),
}
# The wheel of each component for a CUDA 12 toolkit has the -cu12 suffix.
WHEEL_SUFFIX_BEFORE_13 = {"nvidia-cuda-runtime", "nvidia-cublas", "nvidia-curand"}


def wheel_name(component: str, cuda_major: int) -> str:
    name = COMPONENTS[component][2].format(cuda_major=cuda_major)
    if cuda_major < 13 and name in WHEEL_SUFFIX_BEFORE_13:
        name += f"-cu{cuda_major}"
    return name


# --- Architectures ---------------------------------------------------------------------------
def parse_archs(text: str) -> list[str]:
    """'75 80,8.6 sm_89 compute_90' -> ['75', '80', '86', '89', '90'] (sorted, unique)."""
    archs: set[str] = set()
    for item in re.split(r"[\s,;]+", text.strip()):
        if not item:
            continue
        match = re.fullmatch(r"(?:sm_|compute_)?(\d+)(?:\.(\d))?", item)
        if not match:
            raise ConfigError(f"not a CUDA architecture: {item!r} (use compute capabilities such as '86' or '8.6')")
        major, minor = match.groups()
        archs.add(major + minor if minor is not None else major)
    if not archs:
        raise ConfigError("the CUDA architecture list is empty")
    return sorted(archs, key=int)


def detect_gpu_archs(nvidia_smi: str | None = None) -> list[str]:
    """The compute capabilities of this machine's GPUs, [] where nvidia-smi is missing or fails."""
    nvidia_smi = nvidia_smi or shutil.which("nvidia-smi")
    if not nvidia_smi:
        return []
    try:
        result = subprocess.run([nvidia_smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    try:
        return parse_archs(result.stdout)
    except ConfigError:
        return []


def resolve_archs(requested: str | None, cuda_major: int, nvidia_smi: str | None = None) -> tuple[list[str], str]:
    """The architecture list and where it came from."""
    if requested:
        archs, source = parse_archs(requested), "--cuda-arch"
    elif os.environ.get("MRFNET_CUDA_ARCH"):
        archs, source = parse_archs(os.environ["MRFNET_CUDA_ARCH"]), "MRFNET_CUDA_ARCH"
    else:
        archs, source = detect_gpu_archs(nvidia_smi), "nvidia-smi"
        if not archs:
            archs, source = list(DEFAULT_ARCHS), "default"
    lowest = MIN_ARCH.get(cuda_major, MIN_ARCH[13] if cuda_major > 13 else 0)
    too_old = [a for a in archs if int(a) < lowest]
    if too_old:
        raise ConfigError(f"CUDA {cuda_major} cannot compile for sm_{', sm_'.join(too_old)} (its oldest is "
                          f"sm_{lowest}); give --cuda-arch a list from {lowest} up, e.g. --cuda-arch "
                          f"\"{' '.join(DEFAULT_ARCHS)}\", or use an older CUDA toolkit")
    return archs, source


# --- Toolkit ---------------------------------------------------------------------------------
def cuda_version(root: Path) -> str | None:
    """'13.0' from the toolkit's cuda_runtime_api.h (CUDART_VERSION 13000), or None."""
    for header in (root / "include" / "cuda_runtime_api.h",
                   *map(Path, glob.glob(str(root / "targets" / "*" / "include" / "cuda_runtime_api.h")))):
        if header.is_file():
            match = re.search(r"#define\s+CUDART_VERSION\s+(\d+)", header.read_text(errors="replace"))
            if match:
                number = int(match.group(1))
                return f"{number // 1000}.{number % 1000 // 10}"
    return None


def _is_toolkit(root: Path) -> bool:
    return (root / "bin" / "nvcc").is_file() and cuda_version(root) is not None


def _nvcc_toolkit(nvcc: str) -> Path | None:
    """The toolkit of an nvcc found on PATH: the real file's grandparent, or the target of a
    one-line wrapper script (`exec /usr/local/cuda-13.0/bin/nvcc "$@"`)."""
    real = Path(nvcc).resolve()
    if _is_toolkit(real.parent.parent):
        return real.parent.parent
    try:
        text = real.read_text(errors="strict")[:4096]
    except (UnicodeDecodeError, OSError):
        return None
    match = re.search(r"(/\S+)/bin/nvcc\b", text)
    if match and _is_toolkit(Path(match.group(1))):
        return Path(match.group(1))
    return None


def find_toolkit(cuda_home: str | None = None, wheel_roots: list[Path] | None = None,
                 search_system: bool = True) -> Toolkit:
    candidates: list[tuple[Path, str]] = []
    if cuda_home:
        root = Path(cuda_home)
        if not _is_toolkit(root):
            raise ConfigError(f"--cuda-home {cuda_home} is not a CUDA toolkit (it needs bin/nvcc and "
                              "include/cuda_runtime_api.h)")
        candidates.append((root, "--cuda-home"))
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append((Path(os.environ[var]), var))
    if search_system:
        nvcc = shutil.which("nvcc")
        if nvcc:
            root = _nvcc_toolkit(nvcc)
            if root:
                candidates.append((root, f"nvcc on PATH ({nvcc})"))
        candidates.append((Path("/usr/local/cuda"), "/usr/local/cuda"))
        versioned = [Path(p) for p in glob.glob("/usr/local/cuda-*")]
        versioned.sort(key=lambda p: [int(n) for n in re.findall(r"\d+", p.name)], reverse=True)
        candidates += [(p, str(p)) for p in versioned]
    for wheel_root in wheel_roots or []:
        for sub in sorted(wheel_root.glob("cu[0-9]*"), reverse=True) + [wheel_root / "cuda_nvcc"]:
            candidates.append((sub, f"nvidia-cuda-nvcc wheel ({sub})"))
    for root, source in candidates:
        if _is_toolkit(root):
            root = root.resolve()
            return Toolkit(root=str(root), nvcc=str(root / "bin" / "nvcc"), version=cuda_version(root) or "?",
                           source=source)
    raise ConfigError(
        "--gpu needs a CUDA toolkit with nvcc, and none was found (looked at --cuda-home, CUDA_HOME, "
        "CUDA_PATH, nvcc on PATH, /usr/local/cuda, /usr/local/cuda-*, and the nvidia-cuda-nvcc wheel). "
        "Install the CUDA toolkit (12 or 13) or `pip install nvidia-cuda-nvcc nvidia-cuda-runtime "
        "nvidia-cuda-cccl` into the environment, then re-run with --cuda-home DIR or CUDA_HOME=DIR "
        "pointing at the folder that holds bin/nvcc")


# --- Libraries -------------------------------------------------------------------------------
def wheel_roots_from(paths: list[str]) -> list[Path]:
    """The `nvidia/` folders of the nvidia-* wheels under these site-packages folders (a path may
    also be the `nvidia/` folder itself)."""
    roots: list[Path] = []
    for entry in paths:
        if not entry:
            continue
        path = Path(entry)
        for candidate in (path / "nvidia", path):
            if candidate.name == "nvidia" and candidate.is_dir() and candidate.resolve() not in roots:
                roots.append(candidate.resolve())
                break
    return roots


def default_wheel_roots() -> list[Path]:
    extra = os.environ.get("MRFNET_CUDA_WHEELS", "").split(os.pathsep)
    return wheel_roots_from([*extra, *sys.path])


def _version_key(name: str) -> tuple[int, int]:
    """Prefer the shortest versioned name: libcublas.so.13 before libcublas.so.13.0.2; an
    unversioned name (a development link) first of all."""
    suffix = name.split(".so", 1)[1]
    return (suffix.count("."), len(name))


def find_library_file(name: str, dirs: list[Path], major: str | None = None) -> Path | None:
    for directory in dirs:
        matches = [Path(p) for p in glob.glob(str(directory / f"lib{name}.so*"))
                   if re.fullmatch(rf"lib{re.escape(name)}\.so(\.\d+)*", Path(p).name)]
        if major is not None:
            matches = [p for p in matches if p.name == f"lib{name}.so" or p.name.startswith(f"lib{name}.so.{major}")]
        if matches:
            return min(matches, key=lambda p: _version_key(p.name))
    return None


def _find_header(header: str, dirs: list[Path]) -> Path | None:
    for directory in dirs:
        if (directory / header).is_file():
            return directory
    return None


def find_libraries(toolkit: Toolkit, wheel_roots: list[Path], system_lib_dirs=SYSTEM_LIB_DIRS,
                   system_include_dirs=SYSTEM_INCLUDE_DIRS, need_headers: bool = True) -> dict[str, Library]:
    """Each library Caffe links, with its include folder; ``need_headers=False`` for running a
    prebuilt Caffe, where a runtime-only install (no nccl.h, say) is enough."""
    root = Path(toolkit.root)
    cuda_major = int(toolkit.version.split(".")[0])
    toolkit_libs = [root / "lib64", root / "lib", *map(Path, sorted(glob.glob(str(root / "targets" / "*" / "lib"))))]
    toolkit_incs = [root / "include", *map(Path, sorted(glob.glob(str(root / "targets" / "*" / "include"))))]
    found: dict[str, Library] = {}
    missing: list[str] = []
    for name, (header, wheel_dirs, _) in COMPONENTS.items():
        # cudart and cuBLAS carry the CUDA major version in their soname: never mix majors.
        major = str(cuda_major) if name in ("cudart", "cublas", "cublasLt") else None
        wheel_lib_dirs = [w / d.format(cuda_major=cuda_major) / "lib" for w in wheel_roots for d in wheel_dirs]
        wheel_inc_dirs = [w / d.format(cuda_major=cuda_major) / "include" for w in wheel_roots for d in wheel_dirs]
        sources = [("toolkit", toolkit_libs, toolkit_incs), ("wheel", wheel_lib_dirs, wheel_inc_dirs),
                   ("system", [Path(d) for d in system_lib_dirs], [Path(d) for d in system_include_dirs])]
        for origin, lib_dirs, inc_dirs in sources:
            path = find_library_file(name, lib_dirs, major)
            if path is None:
                continue
            include_dir = None
            if header:
                include_dir = _find_header(header, [path.parent.parent / "include", *inc_dirs])
                if include_dir is None and need_headers:
                    continue
            found[name] = Library(name=name, path=str(path), soname=path.name, origin=origin, header=header,
                                  include_dir=str(include_dir or ""))
            break
        else:
            missing.append(name)
    if missing:
        wheels = sorted({wheel_name(n, cuda_major) for n in missing})
        labels = {"cudart": "the CUDA runtime", "cublas": "cuBLAS", "cublasLt": "cuBLASLt", "curand": "cuRAND",
                  "nccl": "NCCL"}
        raise ConfigError(
            f"--gpu: {', '.join(labels[n] for n in missing)} for CUDA {cuda_major} not found (with "
            f"{'its headers' if len(missing) == 1 else 'their headers'}) in the toolkit {toolkit.root}, the nvidia-* "
            f"wheels ({', '.join(map(str, wheel_roots)) or 'none found'}) or the system's library folders. "
            f"Install them into the environment with `pip install {' '.join(wheels)}`, or set MRFNET_CUDA_WHEELS "
            f"to the site-packages folder that holds those wheels' nvidia/ folder")
    return found


def resolve(cuda_arch: str | None = None, cuda_home: str | None = None, wheel_roots: list[Path] | None = None,
            nvidia_smi: str | None = None, search_system: bool = True, need_headers: bool = True) -> Config:
    roots = default_wheel_roots() if wheel_roots is None else wheel_roots
    toolkit = find_toolkit(cuda_home, roots, search_system=search_system)
    archs, arch_source = resolve_archs(cuda_arch, int(toolkit.version.split(".")[0]), nvidia_smi)
    system = (SYSTEM_LIB_DIRS, SYSTEM_INCLUDE_DIRS) if search_system else ((), ())
    libraries = find_libraries(toolkit, roots, *system, need_headers=need_headers)
    return Config(toolkit=toolkit, archs=archs, arch_source=arch_source, ptx=archs[-1], libraries=libraries,
                  wheel_roots=[str(r) for r in roots])


# --- CMake options and the toolkit view --------------------------------------------------------
def cmake_options(config: Config, view: str) -> list[str]:
    """The GPU options, one per item; every path in them starts with `view`."""
    lib = f"{view}/lib64"
    return [
        "-DCPU_ONLY=OFF", "-DUSE_CUDNN=OFF", "-DUSE_NCCL=ON", "-DCUDA_ARCH_NAME=Manual",
        f"-DCUDA_ARCH_BIN={' '.join(config.archs)}", f"-DCUDA_ARCH_PTX={config.ptx}",
        f"-DCUDA_TOOLKIT_ROOT_DIR={view}",
        f"-DCUDA_CUDART_LIBRARY={lib}/libcudart.so",
        f"-DCUDA_cublas_LIBRARY={lib}/libcublas.so",
        f"-DCUDA_curand_LIBRARY={lib}/libcurand.so",
        f"-DNCCL_INCLUDE_DIR={view}/include",
        f"-DNCCL_LIBRARIES={lib}/libnccl.so",
        # libcublas.so.13 needs libcublasLt.so.13 at link time too
        f"-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-rpath-link,{lib}",
        f"-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,{lib}",
    ]


def key_lines(config: Config) -> list[str]:
    """What the GPU build's cache key sees beyond the options: the CUDA version and the sonames
    (a new major version of a library means a new build; where the files lie does not)."""
    return [f"cuda={config.toolkit.version}",
            "libs=" + " ".join(f"{n}:{lib.soname}" for n, lib in sorted(config.libraries.items()))]


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def make_toolkit_view(config: Config, dest: Path) -> Path:
    """(Re)make the folder of symbolic links that serves as CUDA_TOOLKIT_ROOT_DIR."""
    root = Path(config.toolkit.root)
    if dest.exists() or dest.is_symlink():
        shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
    (dest / "include").mkdir(parents=True)
    (dest / "lib64").mkdir()
    for sub in ("bin", "nvvm"):
        if (root / sub).exists():
            _link(root / sub, dest / sub)
    (dest / "lib").symlink_to("lib64")
    # the toolkit first, so that its own headers win over a wheel's copy
    include_dirs = [root / "include", *[Path(lib.include_dir) for lib in config.libraries.values() if lib.include_dir]]
    for directory in include_dirs:
        for entry in sorted(directory.iterdir()):
            if not (dest / "include" / entry.name).exists():
                _link(entry, dest / "include" / entry.name)
    lib_dirs: list[Path] = []
    toolkit_lib = root / "lib64" if (root / "lib64").is_dir() else root / "lib"
    for directory in [toolkit_lib, *[Path(lib.path).parent for lib in config.libraries.values()]]:
        if directory.is_dir() and directory not in lib_dirs:
            lib_dirs.append(directory)
    for directory in lib_dirs:
        for entry in sorted(directory.iterdir()):
            if entry.is_file() and not (dest / "lib64" / entry.name).exists():
                _link(entry, dest / "lib64" / entry.name)
    for lib in config.libraries.values():
        unversioned = dest / "lib64" / f"lib{lib.name}.so"
        if not unversioned.exists():
            _link(Path(lib.path), unversioned)
    return dest


def describe(config: Config) -> list[str]:
    lines = [f"cuda: {config.toolkit.version} at {config.toolkit.root} ({config.toolkit.source})",
             f"nvcc: {config.toolkit.nvcc}",
             f"cuda arch: {' '.join(config.archs)} (from {config.arch_source}); PTX {config.ptx}",
             "cudnn: off (cuDNN 8 removed the cuDNN 7 calls BVLC Caffe makes; convolutions use im2col + cuBLAS)",
             "nvidia wheels: " + (", ".join(config.wheel_roots) or "none found")]
    lines += [f"library {name}: {lib.path} ({lib.origin})" for name, lib in config.libraries.items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("describe", "cmake-options", "key", "json", "toolkit-view", "lib-path"))
    parser.add_argument("dest", nargs="?", help="toolkit-view: the folder to make; cmake-options: the view's path")
    parser.add_argument("--cuda-arch")
    parser.add_argument("--cuda-home")
    args = parser.parse_args(argv)
    try:
        config = resolve(args.cuda_arch, args.cuda_home, need_headers=args.command != "lib-path")
    except ConfigError as exc:
        print(f"gpu_build: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "describe":
        print("\n".join(describe(config)))
    elif args.command == "cmake-options":
        print("\n".join(cmake_options(config, args.dest or "<view>")))
    elif args.command == "key":
        print("\n".join(key_lines(config)))
    elif args.command == "lib-path":  # for LD_LIBRARY_PATH where a prebuilt caffe runs (tools/gpu_check.sh)
        print(os.pathsep.join(dict.fromkeys(str(Path(lib.path).parent) for lib in config.libraries.values())))
    elif args.command == "json":
        print(json.dumps(asdict(config), indent=2))
    else:
        if not args.dest:
            parser.error("toolkit-view needs DEST")
        print(make_toolkit_view(config, Path(args.dest)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
