#!/usr/bin/env bash
# Build and install Horovod 0.28.1 (its last release) into the ACTIVE Python
# environment, against the TensorFlow already installed there.
#
# Usage: bash scripts/install_horovod.sh [--gpu] [--force] [--keep-build] [--verbose]
#   (default)     CPU build: TensorFlow + Gloo, no MPI, no PyTorch/MXNet.
#   --gpu         GPU build: adds HOROVOD_GPU_OPERATIONS=NCCL (CUDA toolkit with nvcc
#                 and NCCL needed), and MPI when `mpicxx` is on PATH. Needs the GPU
#                 TensorFlow wheel (`tensorflow`, not `tensorflow-cpu`). Built and imported
#                 here, never run on a GPU (none on the development machine).
#   --force       rebuild even if a working Horovod is already installed.
#   --keep-build  keep the build folder (printed) instead of deleting it.
#   --verbose     show the compiler output live instead of writing it to a log file.
# Example: source scripts/setup_env.sh && bash scripts/install_horovod.sh
# Environment:
#   PYTHON              interpreter of the target environment (default: `python` on PATH,
#                       i.e. the activated venv; else python3)
#   HOROVOD_BUILD_DIR   where to download and build (default: a new temporary folder)
#   MAKEFLAGS           passed to make (default: -j<number of cores>)
#   HOROVOD_CUDA_HOME, HOROVOD_NCCL_HOME / HOROVOD_NCCL_INCLUDE / HOROVOD_NCCL_LIB,
#   HOROVOD_NCCL_LINK, HOROVOD_BUILD_CUDA_CC_LIST (e.g. 80,90: fewer GPU archs, faster build)
#                       honoured in --gpu mode, see Horovod's docs/gpus.rst and CMakeLists.txt.
#
# Why a source build: 0.28.1 does not compile against TensorFlow >= 2.16 as released:
# horovod/tensorflow/xla_mpi_ops.cc includes XLA headers that moved or no longer compile from
# the wheel (tensorflow/compiler/xla/client/xla_builder.h is gone; tf2xla headers pull in
# highwayhash, which the wheel does not ship). That file is only the optional XLA lowering of
# HorovodAllreduce for GPUs (HOROVOD_ENABLE_XLA_OPS=1). scripts/horovod-0.28.1-tf216.patch
#   1. compiles xla_mpi_ops.cc only for GPU builds against TF 2.6-2.15 (CPU builds never used
#      its body; GPU builds against TF >= 2.16 lose only that opt-in XLA lowering), and
#   2. for GPU builds, replaces stream_executor::gpu::AsGpuStreamValue, which TF 2.21 no
#      longer exports (import failed with an undefined symbol), with
#      Stream::platform_specific_handle() when the Stream class has it.
# Everything else builds unchanged.
#
# Idempotent: when `import horovod.tensorflow as hvd; hvd.init()` already works and the
# installed build was made against the same TensorFlow version (stamp file written by this
# script), it exits in a few seconds.
set -euo pipefail

HOROVOD_VERSION=0.28.1
SDIST_SHA256=92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0
script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$script_dir/lib/args.sh"
electra_help_if_asked "$@"
patch_file="$script_dir/horovod-${HOROVOD_VERSION}-tf216.patch"

gpu=0 force=0 keep=0 verbose=0
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    --force) force=1 ;;
    --keep-build) keep=1 ;;
    --verbose) verbose=1 ;;
    *) echo "error: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

start=$SECONDS
log() { printf '[install_horovod %4ds] %s\n' "$((SECONDS - start))" "$*"; }
die() { echo "error: $*" >&2; exit 1; }

# --- the target Python environment --------------------------------------------------
if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif command -v python >/dev/null 2>&1; then
  py="$(command -v python)"
else
  py="$(command -v python3 || true)"
fi
[[ -n "$py" ]] || die "no Python found; activate the project's venv or set PYTHON"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

# probe: one interpreter start (importing TensorFlow takes ~3 s) that prints key=value lines:
# tf, prefix, and, when Horovod imports, hvd_ok=1/0, hvd (a description), stamp (path of the
# file recording the TensorFlow version it was built against; inside the installed package,
# so reinstalling horovod by other means removes it) and built_tf (its content).
probe() {
  "$py" - "$HOROVOD_VERSION" "$gpu" <<'EOF' 2>/dev/null
import os, sys
import tensorflow as tf
print("tf=" + tf.__version__)
print("prefix=" + sys.prefix)
sys.stdout.flush()
want_version, want_gpu = sys.argv[1], sys.argv[2] == "1"
try:
    import horovod
    import horovod.tensorflow as hvd
    hvd.init()
except Exception as e:
    print("hvd=not usable: " + (str(e).splitlines() or [type(e).__name__])[0])
    print("hvd_ok=0")
    sys.exit(0)
# nccl_built() returns the NCCL version number (0 if absent), hence bool().
ok = horovod.__version__ == want_version and bool(hvd.gloo_built()) and (not want_gpu or bool(hvd.nccl_built()))
print("hvd_ok=%d" % ok)
print("hvd=horovod %s: rank %d/%d, gloo=%s mpi=%s nccl=%s" % (horovod.__version__, hvd.rank(), hvd.size(),
      hvd.gloo_built(), hvd.mpi_built(), bool(hvd.nccl_built())))
stamp = os.path.join(os.path.dirname(horovod.__file__), ".built_against_tensorflow")
print("stamp=" + stamp)
print("built_tf=" + (open(stamp).read().strip() if os.path.exists(stamp) else ""))
EOF
}
field() { sed -n "s/^$1=//p" <<<"$2" | head -n1; }

info="$(probe)" || true
tf_version="$(field tf "$info")"
[[ -n "$tf_version" ]] ||
  die "TensorFlow cannot be imported by $py; install it first (e.g. source scripts/setup_env.sh)"
log "Python: $py (prefix $(field prefix "$info")), TensorFlow $tf_version, mode: $([[ $gpu == 1 ]] && echo GPU || echo CPU)"

# --- fast path: already installed and working -----------------------------------------
if [[ $force == 0 && "$(field hvd_ok "$info")" == 1 ]]; then
  built_tf="$(field built_tf "$info")"
  if [[ "$built_tf" == "$tf_version" ]]; then
    log "already installed and working ($(field hvd "$info"), built against TensorFlow $built_tf); nothing to do"
    log "done in $((SECONDS - start)) s"
    exit 0
  elif [[ -z "$built_tf" ]]; then
    log "a working Horovod is installed but was not built by this script (no stamp); rebuilding to be sure"
  else
    log "installed Horovod was built against TensorFlow $built_tf, now $tf_version; rebuilding"
  fi
elif [[ -n "$(field hvd "$info")" ]]; then
  log "installed: $(field hvd "$info"); (re)building"
fi

# --- build tools --------------------------------------------------------------------
apt_updated=0
apt_install() {
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    die "missing $*; install it (apt-get install $*) or put it on PATH"
  fi
  if [[ $apt_updated == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null; apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}
missing=()
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v patch >/dev/null 2>&1 || missing+=(patch)
if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
cmake_ok() {
  command -v cmake >/dev/null 2>&1 &&
    "$py" - "$(cmake --version | head -n1 | awk '{print $3}')" <<'EOF'
import sys
v = tuple(int(x) for x in sys.argv[1].split(".")[:2] if x.isdigit())
sys.exit(0 if v >= (3, 13) else 1)
EOF
}
if ! cmake_ok; then
  log "CMake >= 3.13 not found; installing the 'cmake' package from PyPI into the environment"
  "$py" -m pip install --quiet 'cmake>=3.13,<4'
  PATH="$(dirname "$py"):$PATH"
  export PATH
  cmake_ok || die "cmake still not usable after pip install cmake"
fi
# --no-build-isolation: the build uses the environment's own setuptools/wheel/packaging.
"$py" -c 'import setuptools, wheel, packaging' 2>/dev/null || {
  log "installing setuptools, wheel, packaging (build requirements)"
  "$py" -m pip install --quiet setuptools wheel packaging
}
log "tools: $(cmake --version | head -n1), $( (c++ --version 2>/dev/null || g++ --version) | head -n1)"

# --- build options --------------------------------------------------------------------
export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_GLOO=1
export MAKEFLAGS="${MAKEFLAGS:--j$(nproc)}"
if [[ $gpu == 1 ]]; then
  # Horovod's docs/gpus.rst: HOROVOD_GPU_OPERATIONS=NCCL builds allreduce, allgather,
  # broadcast, alltoall and reducescatter on NCCL; CMake finds nvcc via HOROVOD_CUDA_HOME
  # (else PATH / the CUDA toolkit) and NCCL via HOROVOD_NCCL_HOME/_INCLUDE/_LIB.
  export HOROVOD_GPU_OPERATIONS=NCCL
  export HOROVOD_GPU="${HOROVOD_GPU:-CUDA}"
  if [[ -z "${HOROVOD_CUDA_HOME:-}" ]]; then
    for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
      if [[ -n "$d" && -x "$d/bin/nvcc" ]]; then export HOROVOD_CUDA_HOME="$d"; break; fi
    done
  fi
  if [[ -z "${HOROVOD_CUDA_HOME:-}" ]] && ! command -v nvcc >/dev/null 2>&1; then
    die "--gpu needs the CUDA toolkit (nvcc); set HOROVOD_CUDA_HOME or CUDA_HOME, or put nvcc on PATH"
  fi
  nvcc_bin="${HOROVOD_CUDA_HOME:+$HOROVOD_CUDA_HOME/bin/nvcc}"
  log "CUDA: $("${nvcc_bin:-nvcc}" --version | tail -n1) (${nvcc_bin:-$(command -v nvcc)});" \
    "use the CUDA major version your TensorFlow was built with"
  if [[ -z "${HOROVOD_NCCL_HOME:-}${HOROVOD_NCCL_INCLUDE:-}${HOROVOD_NCCL_LIB:-}" ]]; then
    cuda_home="${HOROVOD_CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}"
    if [[ -e /usr/include/nccl.h || -e "$cuda_home/include/nccl.h" ]]; then
      log "NCCL: system installation (nccl.h found)"
    else
      # NCCL from PyPI (nvidia-nccl-cu12/-cu13; tensorflow[and-cuda] pulls cu12): headers and
      # libnccl.so.2 only, so link it as a shared library via a libnccl.so symlink placed
      # next to it (the link path stays in the built library's RPATH).
      nccl_dir="$("$py" -c 'import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)"
      [[ -n "$nccl_dir" && -e "$nccl_dir/include/nccl.h" && -e "$nccl_dir/lib/libnccl.so.2" ]] ||
        die "--gpu needs NCCL 2: install libnccl-dev, or the PyPI wheel nvidia-nccl-cu12, or set HOROVOD_NCCL_HOME"
      [[ -e "$nccl_dir/lib/libnccl.so" ]] || ln -s libnccl.so.2 "$nccl_dir/lib/libnccl.so"
      export HOROVOD_NCCL_INCLUDE="$nccl_dir/include" HOROVOD_NCCL_LIB="$nccl_dir/lib"
      export HOROVOD_NCCL_LINK="${HOROVOD_NCCL_LINK:-SHARED}"
      log "NCCL: PyPI wheel at $nccl_dir (shared)"
    fi
  fi
  if command -v mpicxx >/dev/null 2>&1; then
    export HOROVOD_WITH_MPI=1; unset HOROVOD_WITHOUT_MPI
    log "mpicxx found: building with MPI as well as Gloo"
  else
    export HOROVOD_WITHOUT_MPI=1; unset HOROVOD_WITH_MPI
  fi
else
  export HOROVOD_WITHOUT_MPI=1
  unset HOROVOD_WITH_MPI HOROVOD_GPU_OPERATIONS HOROVOD_GPU_ALLREDUCE HOROVOD_GPU_ALLGATHER \
    HOROVOD_GPU_BROADCAST HOROVOD_GPU_ALLTOALL HOROVOD_GPU_REDUCESCATTER
fi

# --- download, verify, unpack, patch ------------------------------------------------------
if [[ -n "${HOROVOD_BUILD_DIR:-}" ]]; then
  work="$HOROVOD_BUILD_DIR"; mkdir -p "$work"; keep=1
else
  work="$(mktemp -d "${TMPDIR:-/tmp}/horovod-build.XXXXXX")"
fi
build_ok=0
cleanup() {
  if [[ $keep == 1 || $build_ok == 0 ]]; then
    echo "build folder kept: $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

sdist="$work/horovod-${HOROVOD_VERSION}.tar.gz"
if [[ ! -e "$sdist" ]]; then
  log "downloading the horovod==$HOROVOD_VERSION sdist from PyPI"
  "$py" -m pip download --quiet --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$work"
fi
echo "$SDIST_SHA256  $sdist" | sha256sum --check --quiet ||
  die "$sdist does not have the expected SHA-256 $SDIST_SHA256"
src="$work/horovod-${HOROVOD_VERSION}"
rm -rf "$src"
tar -xzf "$sdist" -C "$work"
[[ -e "$patch_file" ]] || die "patch file $patch_file is missing"
log "applying ${patch_file##*/}"
patch --quiet --forward -p1 -d "$src" < "$patch_file" || die "could not apply $patch_file to $src"

# --- build and install ---------------------------------------------------------------------
log "building (MAKEFLAGS=$MAKEFLAGS; about 5-8 minutes on 2 cores; log: $work/build.log)"
build_log="$work/build.log"
pip_cmd=("$py" -m pip install --no-build-isolation --no-cache-dir "$src")
build_start=$SECONDS
if [[ $verbose == 1 ]]; then
  "${pip_cmd[@]}" -v 2>&1 | tee "$build_log" || die "horovod build failed (log: $build_log)"
else
  if ! "${pip_cmd[@]}" -v >"$build_log" 2>&1; then
    echo "---- last 60 lines of $build_log ----" >&2
    tail -n 60 "$build_log" >&2
    die "horovod build failed (full log: $build_log)"
  fi
fi
log "built and installed in $((SECONDS - build_start)) s"

# --- check and stamp ------------------------------------------------------------------------
info="$(probe)" || true
[[ "$(field hvd_ok "$info")" == 1 ]] ||
  die "horovod installed, but 'import horovod.tensorflow as hvd; hvd.init()' fails or lacks the requested features: $(field hvd "$info") (log: $build_log)"
echo "$tf_version" > "$(field stamp "$info")"
build_ok=1
log "verified: $(field hvd "$info")"
runner="$(dirname "$py")/horovodrun"
[[ -x "$runner" ]] || runner="$(command -v horovodrun || echo "python -m horovod.runner.launch")"
log "launcher: $runner (e.g. $runner -np 2 -H localhost:2 --gloo python train.py)"
log "done in $((SECONDS - start)) s"
