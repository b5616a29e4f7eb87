#!/usr/bin/env bash
# The GPU checks of issue 7, in two steps, because the GPU machine cannot build Caffe (it has CUDA 13
# and the nvidia-* wheels, but neither the Debian development libraries nor a registry to get them):
#
#   tools/gpu_check.sh bundle   on the Debian development machine (nvcc 13.0 there, cuBLAS/cuRAND/
#                               NCCL from the nvidia-* wheels): builds the GPU Caffe with
#                               tools/install_caffe.sh --gpu (cached; into a separate environment,
#                               so the project's .venv keeps its CPU build) and packs the caffe CLI,
#                               libcaffe and the Debian runtime libraries they load into
#                               build/gpu-bundle.tar.xz (about 15 MB; build/ travels with `carry`)
#   tools/gpu_check.sh run      on the GPU machine: unpacks the bundle, finds the CUDA libraries there
#                               (tools/gpu_build.py lib-path: the toolkit, the nvidia-* wheels of its
#                               python3), runs `caffe device_query` and `caffe time` (forward and
#                               backward) for each variant's prototxt/<variant>/deploy.prototxt
#                               reshaped to each of SHAPES, and writes logs and summary.tsv to $OUT
#
# Settings (environment):
#   OUT         where `run` writes (default: reports/gpu/run-<UTC time>)
#   SHAPES      NxHxW list (default: "1x720x1280 16x256x256": a 1280x720 frame, a training batch)
#   VARIANTS    default: refinenet lwrefinenet rcrefinenet mrfnet
#   ITERATIONS  caffe time iterations (default 20)
#   DEVICE      gpu (default) or cpu: `run` on the CPU with a CPU caffe, to try this script anywhere
#   CAFFE       the caffe binary for `run` (default: the bundle's)
#   CUDA_ARCH   `bundle`: the architectures to build for (default 90: the H100)
#   MRFNET_CUDA_WHEELS  `bundle`: site-packages holding the nvidia-* wheels (see install_caffe.sh)
#   MRFNET_GPU_VENV     `bundle`: the GPU build's environment (default build/gpu-venv, made if missing)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bundle_tar="$repo/build/gpu-bundle.tar.xz"
say() { printf '[gpu_check] %s\n' "$*" >&2; }
die() { printf '[gpu_check] error: %s\n' "$*" >&2; exit 1; }

# --- bundle ------------------------------------------------------------------------------------
# Libraries the GPU machine has itself (glibc, the C++ runtime) or must bring from its own CUDA.
skip_library() {
  case "$(basename "$1")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libresolv.so*|libutil.so*|libnsl.so*|libanl.so*) return 0 ;;
    libmvec.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) return 0 ;;
    libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|libcurand.so*|libnccl.so*) return 0 ;;
  esac
  return 1
}

bundle() {
  local venv="${MRFNET_GPU_VENV:-$repo/build/gpu-venv}" python="${MRFNET_PYTHON:-/usr/bin/python3}"
  if [ ! -x "$venv/bin/python" ]; then
    say "making $venv (the GPU build's environment) with the project's pip packages"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q -e "$repo"
  fi
  bash "$repo/tools/install_caffe.sh" --python "$venv/bin/python" --gpu --cuda-arch "${CUDA_ARCH:-90}"
  local prefix
  prefix=$("$venv/bin/python" -c 'import caffe, pathlib; print(pathlib.Path(caffe.__file__).resolve().parents[4])')
  grep -q -- '-DCPU_ONLY=OFF' "$prefix/build-info.txt" || die "$prefix is not a GPU build"
  local stage
  stage=$(mktemp -d)
  mkdir -p "$stage/gpu-bundle/bin" "$stage/gpu-bundle/lib"
  cp -L "$prefix/bin/caffe" "$stage/gpu-bundle/bin/"
  cp -a "$prefix"/lib/libcaffe.so* "$stage/gpu-bundle/lib/"
  cp "$prefix/build-info.txt" "$stage/gpu-bundle/"
  local lib
  while read -r lib; do
    skip_library "$lib" || cp -L "$lib" "$stage/gpu-bundle/lib/"
  done < <(LD_LIBRARY_PATH="$prefix/lib:$prefix/cuda/lib64" ldd "$prefix/bin/caffe" "$prefix"/lib/libcaffe.so.* \
           | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u)
  mkdir -p "$(dirname "$bundle_tar")"
  tar -C "$stage" -cJf "$bundle_tar" gpu-bundle
  rm -rf "$stage"
  say "bundle: $bundle_tar ($(du -h "$bundle_tar" | cut -f1)); run \`bash tools/gpu_check.sh run\` on the GPU machine"
}

# --- run ---------------------------------------------------------------------------------------
# Writes prototxt $1 with the Input reshaped to N x 3 x H x W ($3 = NxHxW) and force_backward, so that
# `caffe time` times every layer's backward pass too (a deploy net has no loss to need it).
reshape_prototxt() {
  local n h w
  IFS=x read -r n h w <<< "$3"
  awk -v n="$n" -v h="$h" -v w="$w" '
    NR == 1 { print "force_backward: true" }
    /^ *dim:/ && count < 4 {
      count++
      value = (count == 1 ? n : (count == 3 ? h : (count == 4 ? w : "")))
      if (value != "") sub(/dim: *[0-9]+/, "dim: " value)
    }
    { print }' "$1" > "$2"
}

unpacked=""
cleanup() { [ -z "$unpacked" ] || rm -rf "$unpacked"; }
trap cleanup EXIT

run() {
  local out="${OUT:-$repo/reports/gpu/run-$(date -u +%Y%m%dT%H%M%SZ)}"
  local device="${DEVICE:-gpu}" iterations="${ITERATIONS:-20}"
  local shapes="${SHAPES:-1x720x1280 16x256x256}" variants="${VARIANTS:-refinenet lwrefinenet rcrefinenet mrfnet}"
  mkdir -p "$out"
  local caffe="${CAFFE:-}"
  if [ -z "$caffe" ]; then
    [ -f "$bundle_tar" ] || die "no $bundle_tar: make it with \`bash tools/gpu_check.sh bundle\` on the development machine, then carry build/gpu-bundle.tar.xz"
    unpacked=$(mktemp -d)
    tar -C "$unpacked" -xJf "$bundle_tar"
    caffe="$unpacked/gpu-bundle/bin/caffe"
    cp "$unpacked/gpu-bundle/build-info.txt" "$out/"
    local cuda_libs
    cuda_libs=$(python3 "$repo/tools/gpu_build.py" lib-path) || die "the CUDA libraries were not found (above)"
    export LD_LIBRARY_PATH="$unpacked/gpu-bundle/lib:$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  export GLOG_minloglevel=0  # caffe time reports at INFO level
  local gpu_flag=()
  [ "$device" = gpu ] && gpu_flag=(-gpu 0)
  {
    echo "command: OUT=$out DEVICE=$device SHAPES='$shapes' VARIANTS='$variants' ITERATIONS=$iterations bash tools/gpu_check.sh run"
    echo "date: $(date -u +%FT%TZ)"
    echo "caffe: $caffe"
    echo "LD_LIBRARY_PATH: ${LD_LIBRARY_PATH:-}"
    echo "git: $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo '?')"
  } > "$out/run-info.txt"
  if [ "$device" = gpu ]; then
    nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
    "$caffe" device_query "${gpu_flag[@]}" > "$out/device_query.log" 2>&1 || die "caffe device_query failed: $(tail -n 5 "$out/device_query.log")"
  fi
  printf 'variant\tshape\tdevice\tforward_ms\tbackward_ms\tforward_backward_ms\n' > "$out/summary.tsv"
  local variant shape model log
  for variant in $variants; do
    for shape in $shapes; do
      model="$out/$variant-$shape.prototxt"
      log="$out/time-$variant-$shape.log"
      reshape_prototxt "$repo/prototxt/$variant/deploy.prototxt" "$model" "$shape"
      say "caffe time: $variant at $shape on $device"
      if "$caffe" time -model "$model" "${gpu_flag[@]}" -iterations "$iterations" > "$log" 2>&1; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$shape" "$device" \
          "$(sed -n 's/.*Average Forward pass: \([0-9.]*\) ms.*/\1/p' "$log")" \
          "$(sed -n 's/.*Average Backward pass: \([0-9.]*\) ms.*/\1/p' "$log")" \
          "$(sed -n 's/.*Average Forward-Backward: \([0-9.]*\) ms.*/\1/p' "$log")" >> "$out/summary.tsv"
      else
        printf '%s\t%s\t%s\tFAILED\tFAILED\tFAILED\n' "$variant" "$shape" "$device" >> "$out/summary.tsv"
        say "failed: $(tail -n 3 "$log")"
      fi
    done
  done
  column -t -s "$(printf '\t')" "$out/summary.tsv" 2>/dev/null || cat "$out/summary.tsv"
  say "outputs: $out"
}

case "${1:-}" in
  bundle) bundle ;;
  run) run ;;
  *) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 2 ;;
esac
