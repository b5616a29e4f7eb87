#!/usr/bin/env bash
# Set up everything on a Debian 12 machine, then run the main job or the tests.
#
# Usage: tools/bootstrap.sh setup|demo|test [ARGS...]
#   setup   Debian packages, the virtual environment, pip packages, Caffe (idempotent, cached)
#   demo    setup, then the main job: `mrfnet reproduce` on the embedded data (ARGS go to it)
#   test    setup, then the test suite (ARGS go to pytest)
#
# Environment:
#   MRFNET_PYTHON     interpreter for the environment (default /usr/bin/python3, Debian's 3.11,
#                     the Python that Debian's Boost.Python is built for)
#   MRFNET_VENV       the environment's folder (default: .venv in the repository)
#   MRFNET_CACHE_DIR  caches: the Caffe build and its source (see tools/install_caffe.sh)
set -euo pipefail

# openmpi-bin/libopenmpi-dev: `mpirun -np N mrfnet train` (mpi4py, from the test extra, loads Open MPI's library)
readonly SYSTEM_PACKAGES=(python3 python3-venv python3-dev graphviz openmpi-bin libopenmpi-dev)

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${MRFNET_PYTHON:-/usr/bin/python3}
venv=${MRFNET_VENV:-$repo/.venv}

say() { printf '[bootstrap] %s\n' "$*" >&2; }
die() { printf '[bootstrap] error: %s\n' "$*" >&2; exit 1; }

ensure_system_packages() {
  local missing="" pkg
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || missing+="$pkg "
  done
  [ -z "$missing" ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages; run as root, then re-run this command:
    apt-get update && apt-get install -y --no-install-recommends $missing"
  say "installing Debian packages: $missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed: is Debian's archive reachable?"
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null || die "apt-get install failed for: $missing"
}

ensure_venv() {
  if [ ! -x "$venv/bin/python" ]; then
    [ -x "$python" ] || die "no Python at $python (set MRFNET_PYTHON)"
    say "creating the environment $venv with $python"
    "$python" -m venv "$venv" || die "could not create $venv"
  fi
}

# pip runs only when setup.py changed since the last successful install (a stamp in the venv).
ensure_python_packages() {
  local stamp="$venv/.mrfnet-pip-stamp" want
  want=$(cat "$repo/setup.py" <("$venv/bin/python" -V) | sha256sum | cut -c1-16)
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  local log="$venv/pip-install.log"
  say "installing Python packages (pip cache makes re-runs fast); log: $log"
  { "$venv/bin/python" -m pip install --upgrade pip setuptools wheel \
      && "$venv/bin/python" -m pip install -e "$repo[test]"; } >"$log" 2>&1 || {
    tail -n 20 "$log" >&2
    die "pip install failed (is PyPI reachable?); full log: $log"
  }
  echo "$want" > "$stamp"
}

setup() {
  ensure_system_packages
  ensure_venv
  ensure_python_packages
  bash "$repo/tools/install_caffe.sh" --python "$venv/bin/python"
}

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
  setup) setup ;;
  demo) setup; "$venv/bin/mrfnet" doctor; exec "$venv/bin/mrfnet" reproduce "$@" ;;
  test)
    setup
    cd "$repo"
    # the MPI tests start mpirun, which refuses root unless told twice (in a container the tests run as root)
    if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
    exec "$venv/bin/python" -m pytest "$@" ;;
  *) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
