#!/usr/bin/env bash
# Build BVLC Caffe (Debian's bullseye source package + this project's patches) and make it
# importable from one Python environment.
#
# Usage: tools/install_caffe.sh --python PATH [--jobs N] [--force-build] [--print-key] [--fetch-only]
#                               [--print-config] [--baseline] [--gpu [--cuda-arch LIST] [--cuda-home DIR]]
#   --force-build   build even if the cache or the environment already has a Caffe
#   --print-key     print the cache key of this configuration and exit
#   --fetch-only    download and verify the source package into the cache (for offline builds) and exit
#   --print-config  print the resolved configuration (key, patches, CMake options; with --gpu the CUDA
#                   toolkit, architectures and libraries) and exit without building (also --dry-run)
#   --baseline      build BVLC Caffe with only the patches it needs to build and run here (BASELINE_PATCHES
#                   below; no OpenMP), under its own key, for benchmarks that compare it side by side with
#                   the project's build: it is not linked into the environment; its prefix is printed
#   --gpu           build for CUDA (cuDNN off, NCCL on) with tools/caffe-patches/gpu/ too; see tools/gpu_build.py
#   --cuda-arch L   GPU architectures, e.g. "75 80 86 89 90" (default: the machine's GPUs from
#                   nvidia-smi, else sm_75..sm_90)
#   --cuda-home D   the CUDA toolkit (default: CUDA_HOME, nvcc on PATH, /usr/local/cuda*)
#
# Environment:
#   MRFNET_CACHE_DIR       cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/mrfnet)
#   MRFNET_DEBIAN_MIRROR   Debian archive to fetch the source from (default: read from apt's own
#                          configuration, the archive the machine already installs Debian from)
#   MRFNET_CAFFE_SOURCE    source package version to build (default below)
#   MRFNET_CUDA_WHEELS     --gpu: site-packages folder(s), ':'-separated, holding the nvidia-* wheels
#                          (cuBLAS, cuRAND, NCCL) when they are not installed in the --python environment
#
# The build lands in $MRFNET_CACHE_DIR/caffe/<key>, where <key> hashes the source version, this
# project's patches, the CMake options, the Python ABI and NumPy's major version (with --gpu also
# the GPU patches, the architectures, the CUDA version and the libraries' sonames): a second run
# with nothing changed only re-links the environment and takes seconds. The environment uses the
# build of the last run: --gpu links the GPU build in, a run without it the CPU build. A Caffe that
# the environment can already import with Python layers (a user's own build) is used as it is.
set -euo pipefail

readonly RECIPE_VERSION=2   # bump when a build step changes in a way the key cannot see
readonly SOURCE_PACKAGE=caffe
readonly SOURCE_SUITE=bullseye
SOURCE_VERSION=${MRFNET_CAFFE_SOURCE:-1.0.0+git20180821.99bd997-8}
# The patches without which BVLC Caffe does not build or run here (--baseline); the others make it lean
# and fast, and are what the benchmarks measure against this baseline.
readonly BASELINE_PATCHES=(0001-protobuf-one-argument-bytes-limit.patch 0002-numpy2-scikit-image-io.patch)
readonly BUILD_PACKAGES=(cmake g++ make patch xz-utils ca-certificates
  libboost-system-dev libboost-thread-dev libboost-filesystem-dev libboost-python-dev
  libgoogle-glog-dev libgflags-dev libprotobuf-dev protobuf-compiler
  libhdf5-dev liblmdb-dev libopenblas-dev libopenblas-openmp-dev libdnnl-dev)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
patch_dir="$here/caffe-patches"
gpu_patch_dir="$patch_dir/gpu"
cache_root=${MRFNET_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mrfnet}
python=""
jobs=$(nproc 2>/dev/null || echo 2)
force_build=0
print_key=0
fetch_only=0
print_config=0
baseline=0
gpu=0
cuda_arch=""
cuda_home=""

say() { printf '[install_caffe] %s\n' "$*" >&2; }
die() { printf '[install_caffe] error: %s\n' "$*" >&2; exit 1; }

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --python) python=${2:?--python needs a path}; shift 2 ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift 2 ;;
    --force-build) force_build=1; shift ;;
    --print-key) print_key=1; shift ;;
    --fetch-only) fetch_only=1; shift ;;
    --print-config|--dry-run) print_config=1; shift ;;
    --baseline) baseline=1; shift ;;
    --gpu) gpu=1; shift ;;
    --cuda-arch) cuda_arch=${2:?--cuda-arch needs a list such as \"75 80 86 89 90\"}; shift 2 ;;
    --cuda-home) cuda_home=${2:?--cuda-home needs a folder}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
[ -n "$python" ] || die "--python PATH is required (the interpreter of the environment that will import caffe)"
[ -x "$python" ] || die "not an executable: $python"
if [ "$gpu" = 0 ] && { [ -n "$cuda_arch" ] || [ -n "$cuda_home" ]; }; then
  die "--cuda-arch and --cuda-home need --gpu"
fi

# --- Debian packages -------------------------------------------------------------------------
missing_packages() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || printf '%s ' "$pkg"
  done
}

ensure_packages() {
  local missing
  missing=$(missing_packages "$@")
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "missing Debian packages; run as root, then re-run this command:
    apt-get update && apt-get install -y --no-install-recommends $missing"
  fi
  say "installing Debian packages: $missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed: is Debian's archive reachable?"
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null \
    || die "apt-get install failed for: $missing"
}

# --- Cache key -------------------------------------------------------------------------------
python_abi() {
  "$python" - <<'EOF'
import sys, sysconfig
try:
    import numpy
    numpy_major = numpy.__version__.split(".")[0]
except ImportError:
    numpy_major = "none"
print(f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
      f"-{sysconfig.get_config_var('SOABI')}-numpy{numpy_major}")
EOF
}

# The options of both builds; with --gpu, CPU_ONLY=ON gives way to the CUDA options of
# tools/gpu_build.py, whose paths all lie in the toolkit view $1 (default: a placeholder, for the key).
cmake_options() {
  local view=${1:-"<toolkit-view>"}
  local inc lib
  inc=$("$python" -c 'import sysconfig; print(sysconfig.get_path("include"))')
  lib=$("$python" -c 'import sysconfig, os; v = sysconfig.get_config_var; print(os.path.join(v("LIBDIR"), v("LDLIBRARY")))')
  local ver
  ver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$gpu" = 1 ]; then
    gpu_helper cmake-options "$view"
  elif [ "$baseline" = 1 ]; then
    printf '%s\n' -DCPU_ONLY=ON
  else
    # OpenMP for the CPU layers that tools/caffe-patches/0003-openmp-cpu-layers.patch threads, and
    # Debian's OpenMP build of OpenBLAS, so that the GEMMs and those layers share libgomp's threads
    # (with the pthread build, the two thread pools take each other's cores); the RPATH CMake
    # derives from this link path makes it the one loaded, whatever Debian's alternative says.
    # USE_DNNL: the oneDNN engine of tools/caffe-patches/0008-dnnl-engine.patch, on Debian's
    # libdnnl (built on libgomp too: one OpenMP runtime in the process).
    local multiarch
    multiarch=$(gcc -print-multiarch 2>/dev/null) || multiarch=unknown
    printf '%s\n' -DCPU_ONLY=ON -DUSE_OPENMP=ON -DUSE_DNNL=ON \
      "-DOpenBLAS_INCLUDE_DIR=/usr/include/$multiarch/openblas-openmp" \
      "-DOpenBLAS_LIB=/usr/lib/$multiarch/openblas-openmp/libopenblas.so"
  fi
  printf '%s\n' -DBLAS=Open -DBUILD_python=ON -DBUILD_python_layer=ON \
    -DUSE_OPENCV=OFF -DUSE_LEVELDB=OFF -DUSE_LMDB=ON -DBUILD_docs=OFF -DCMAKE_BUILD_TYPE=Release \
    "-Dpython_version=$ver" "-DPYTHON_EXECUTABLE=$python" \
    "-DPYTHON_INCLUDE_DIR=$inc" "-DPYTHON_LIBRARY=$lib"
}

# --- GPU (--gpu) -------------------------------------------------------------------------------
# tools/gpu_build.py resolves the CUDA toolkit, the architectures and the libraries (stdlib only, run
# by the environment's interpreter so that the nvidia-* wheels installed there are found).
gpu_helper() {
  local args=("$@")
  [ -n "$cuda_arch" ] && args+=(--cuda-arch "$cuda_arch")
  [ -n "$cuda_home" ] && args+=(--cuda-home "$cuda_home")
  "$python" "$here/gpu_build.py" "${args[@]}"
}

# The project's patches of this build (all, or with --baseline BASELINE_PATCHES), in name order.
project_patches() {
  if [ "$baseline" = 1 ]; then
    local name
    cpu_patches=()
    for name in "${BASELINE_PATCHES[@]}"; do cpu_patches+=("$patch_dir/$name"); done
  else
    cpu_patches=("$patch_dir"/*.patch)
  fi
}

# The patches of this build, in the order they apply: the project's, then with --gpu the GPU ones.
build_patches() {
  local cpu_patches
  project_patches
  patches=("${cpu_patches[@]}")
  if [ "$gpu" = 1 ]; then patches+=("$gpu_patch_dir"/*.patch); fi
}

patch_names() {
  local cpu_patches p names=()
  project_patches
  for p in "${cpu_patches[@]}"; do names+=("$(basename "$p")"); done
  echo "${names[*]}"
}

cache_key() {
  {
    echo "recipe=$RECIPE_VERSION source=$SOURCE_PACKAGE/$SOURCE_VERSION"
    echo "abi=$(python_abi)"
    cmake_options | grep -v -e '-DPYTHON_EXECUTABLE=' -e '-DPYTHON_INCLUDE_DIR=' -e '-DPYTHON_LIBRARY='
    local cpu_patches p
    project_patches
    for p in "${cpu_patches[@]}"; do sha256sum "$p" | cut -d' ' -f1; done
    if [ "$gpu" = 1 ]; then
      echo "mode=gpu"
      gpu_helper key
      for p in "$gpu_patch_dir"/*.patch; do sha256sum "$p" | cut -d' ' -f1; done
    fi
  } | sha256sum | cut -c1-16
}

# --- An existing Caffe ----------------------------------------------------------------------
# Prints the folder of an importable caffe with Python layers, or nothing.
importable_caffe() {
  "$python" - <<'EOF' 2>/dev/null || true
import os
import caffe
if "Python" in caffe.layer_type_list():
    print(os.path.dirname(os.path.dirname(os.path.abspath(caffe.__file__))))
EOF
}

# --- Source ---------------------------------------------------------------------------------
debian_archive() {
  if [ -n "${MRFNET_DEBIAN_MIRROR:-}" ]; then echo "${MRFNET_DEBIAN_MIRROR%/}/"; return; fi
  local uri
  uri=$(apt-get indextargets --format '$(REPO_URI)|$(ORIGIN)|$(LABEL)' 2>/dev/null \
        | awk -F'|' '$2 == "Debian" && $3 == "Debian" {print $1; exit}')
  [ -n "$uri" ] || die "no Debian archive found in apt's configuration (run apt-get update, or set MRFNET_DEBIAN_MIRROR)"
  echo "$uri"
}

# Checks every file listed in the .dsc's Checksums-Sha256 field.
verify_dsc() {
  local dsc=$1 dir
  dir=$(dirname "$dsc")
  awk '/^Checksums-Sha256:/ {on=1; next} /^[^ ]/ {on=0} on && NF == 3 {print $1 "  " $3}' "$dsc" \
    > "$dir/SHA256SUMS"
  [ -s "$dir/SHA256SUMS" ] || die "no Checksums-Sha256 in $dsc"
  (cd "$dir" && sha256sum --quiet -c SHA256SUMS) || die "checksum mismatch in $dir (delete it to re-download)"
}

fetch_source() {
  local dest=$1
  mkdir -p "$(dirname "$dest")"
  local dsc="$dest/${SOURCE_PACKAGE}_${SOURCE_VERSION}.dsc"
  if [ -f "$dsc" ]; then verify_dsc "$dsc"; echo "$dsc"; return; fi
  local archive apt_dir
  archive=$(debian_archive)
  apt_dir=$(mktemp -d)
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dest.partial"
  echo "deb-src $archive $SOURCE_SUITE main" > "$apt_dir/sources.list"
  local apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
                  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
                  -o APT::Sandbox::User=root -o Debug::NoLocking=1)
  say "fetching source package $SOURCE_PACKAGE=$SOURCE_VERSION from $archive ($SOURCE_SUITE)"
  apt-get "${apt_opts[@]}" -qq update >"$apt_dir/update.log" 2>&1 \
    || die "could not read $archive (no network, or a wrong MRFNET_DEBIAN_MIRROR?): $(tail -n 3 "$apt_dir/update.log")"
  (cd "$dest.partial" && apt-get "${apt_opts[@]}" -qq source --download-only "$SOURCE_PACKAGE=$SOURCE_VERSION") \
    >"$apt_dir/source.log" 2>&1 \
    || die "could not download $SOURCE_PACKAGE=$SOURCE_VERSION: $(tail -n 3 "$apt_dir/source.log")"
  rm -rf "$apt_dir" "$dest"
  mv "$dest.partial" "$dest"
  verify_dsc "$dsc"
  echo "$dsc"
}

# Unpacks the source, applies Debian's patch series, then this project's patches in name order.
prepare_tree() {
  local dsc=$1 tree=$2 dir version_no_rev
  dir=$(dirname "$dsc")
  version_no_rev=${SOURCE_VERSION%-*}
  rm -rf "$tree"; mkdir -p "$tree"
  tar -xzf "$dir/${SOURCE_PACKAGE}_${version_no_rev}.orig.tar.gz" -C "$tree"
  tar -xJf "$dir/${SOURCE_PACKAGE}_${SOURCE_VERSION}.debian.tar.xz" -C "$tree"
  local p
  while read -r p; do
    [ -z "$p" ] || [ "${p#\#}" != "$p" ] && continue
    patch -d "$tree" -p1 -s < "$tree/debian/patches/$p" || die "Debian patch $p does not apply"
  done < "$tree/debian/patches/series"
  local patches
  build_patches
  for p in "${patches[@]}"; do
    patch -d "$tree" -p1 -s < "$p" || die "project patch ${p#"$patch_dir"/} does not apply"
  done
}

build_and_install() {
  local tree=$1 prefix=$2 log=$3
  local opts
  mapfile -t opts < <(cmake_options "$prefix/cuda")
  say "building Caffe$([ "$gpu" = 1 ] && echo " for CUDA") with $jobs jobs (about 10 minutes on 2 cores); log: $log"
  {
    cmake -S "$tree" -B "$tree/build" "${opts[@]}" "-DCMAKE_INSTALL_PREFIX=$prefix" \
      && cmake --build "$tree/build" -j "$jobs" \
      && cmake --install "$tree/build"
  } >"$log" 2>&1 || {
    tail -n 40 "$log" >&2
    die "the Caffe build failed (last lines above; full log: $log)"
  }
}

# Read by `mrfnet doctor`: what this build is and how it was configured.
write_build_info() {
  local file=$1 key=$2 view=$3
  {
    echo "source: $SOURCE_PACKAGE $SOURCE_VERSION (Debian $SOURCE_SUITE) + debian/patches/series"
    echo "key: $key"
    echo "built: $(date -u +%FT%TZ)"
    echo "patches: $(patch_names)"
    echo "cmake: $(cmake_options "$view" | tr '\n' ' ')"
    if [ "$gpu" = 1 ]; then
      echo "gpu patches: $(cd "$gpu_patch_dir" && echo *.patch)"
      gpu_helper describe
    fi
  } > "$file"
}

# Caffe's own Python tests, with the prototxts test_draw walks (models/, examples/ of the source
# tree, found three folders above the test folder), for the project's test command.
install_upstream_tests() {
  local tree=$1 dest=$2/share/caffe-tests
  mkdir -p "$dest/python/caffe"
  cp -r "$tree/python/caffe/test" "$dest/python/caffe/"
  (cd "$tree" && find models examples -name '*.prototxt' -exec cp --parents {} "$dest" \;)
}

# --- Environment ----------------------------------------------------------------------------
link_into_env() {
  local prefix=$1 site bin
  site=$("$python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  bin=$(dirname "$python")
  echo "$prefix/lib/python3/dist-packages" > "$site/mrfnet-caffe.pth"
  local tool
  for tool in "$prefix"/bin/*; do
    [ -x "$tool" ] && ln -sfn "$tool" "$bin/$(basename "$tool")"
  done
}

check_import() {
  "$python" -c 'import caffe; assert "Python" in caffe.layer_type_list(), "no Python layer"' \
    || die "the installed Caffe does not import from $python"
  if [ "$gpu" = 1 ]; then
    "$python" -c 'import caffe; assert caffe.has_nccl(), "built without NCCL"' \
      || die "the installed GPU Caffe has no NCCL"
  fi
}

print_config() {
  local key=$1 prefix=$2 state="not built"
  [ -f "$prefix/.complete" ] && state="cached"
  echo "mode: $([ "$gpu" = 1 ] && echo gpu || echo cpu)$([ "$baseline" = 1 ] && echo " (baseline)")"
  echo "key: $key"
  echo "prefix: $prefix ($state)"
  echo "source: $SOURCE_PACKAGE $SOURCE_VERSION (Debian $SOURCE_SUITE) + debian/patches/series"
  echo "patches: $(patch_names)"
  if [ "$gpu" = 1 ]; then
    echo "gpu patches: $(cd "$gpu_patch_dir" && echo *.patch)"
    gpu_helper describe
  fi
  echo "cmake:"
  cmake_options "$prefix/cuda" | sed 's/^/  /'
}

main() {
  if [ "$gpu" = 1 ]; then
    # resolve the CUDA configuration first: its error says what to install or set
    gpu_helper describe >/dev/null || die "the GPU build cannot be configured (see the error above)"
  fi
  [ "$print_config" = 1 ] || ensure_packages "${BUILD_PACKAGES[@]}"
  local key prefix
  key=$(cache_key)
  prefix="$cache_root/caffe/$key"
  if [ "$print_key" = 1 ]; then echo "$key"; return; fi
  if [ "$print_config" = 1 ]; then print_config "$key" "$prefix"; return; fi
  if [ "$fetch_only" = 1 ]; then fetch_source "$cache_root/sources/${SOURCE_PACKAGE}_${SOURCE_VERSION}"; return; fi

  local existing=""
  [ "$baseline" = 1 ] || existing=$(importable_caffe)
  if [ -n "$existing" ] && [ "${existing#"$cache_root"/caffe/}" = "$existing" ] && [ "$force_build" = 0 ]; then
    say "using the Caffe already importable from $python: $existing"
    return
  fi
  if [ -f "$prefix/.complete" ] && [ "$force_build" = 0 ]; then
    say "cached build $key is complete: $prefix"
    # the view's links follow the libraries to where they are now (a re-installed wheel, say)
    [ "$gpu" = 0 ] || gpu_helper toolkit-view "$prefix/cuda" >/dev/null
  else
    rm -rf "$prefix"
    mkdir -p "$cache_root/logs" "$cache_root/work"
    local dsc tree
    dsc=$(fetch_source "$cache_root/sources/${SOURCE_PACKAGE}_${SOURCE_VERSION}")
    tree="$cache_root/work/$key"
    prepare_tree "$dsc" "$tree"
    [ "$gpu" = 0 ] || gpu_helper toolkit-view "$prefix/cuda" >/dev/null
    build_and_install "$tree" "$prefix" "$cache_root/logs/build-$key.log"
    install_upstream_tests "$tree" "$prefix"
    rm -rf "$tree"
    write_build_info "$prefix/build-info.txt" "$key" "$prefix/cuda"
    touch "$prefix/.complete"
  fi
  if [ "$baseline" = 1 ]; then
    PYTHONPATH="$prefix/lib/python3/dist-packages" "$python" -c 'import caffe' \
      || die "the baseline Caffe does not import from $python"
    say "baseline Caffe ready (not linked into the environment): $prefix"
    echo "$prefix"
    return
  fi
  link_into_env "$prefix"
  check_import
  say "Caffe ready: $prefix"
}

main
