#!/usr/bin/env bash
# Start the GPU container (built by scripts/docker/build.sh) with the repository, the data
# folder and the results folder mounted, and run COMMAND in it (default: an interactive bash).
#
# Usage: bash scripts/docker/launch.sh [COMMAND [ARGS...]]
#   e.g. bash scripts/docker/launch.sh bash scripts/run_pretraining.sh
# Mounts (host -> container):
#   this repository          -> /workspace/electra          (the code you edit, not the image's copy)
#   $DATA_DIR                -> /workspace/data, with DATA_DIR=/workspace/data set inside, where
#                               data/create_datasets_from_start.sh writes. The default, the
#                               repository's data/, is also /workspace/electra/data, where
#                               scripts/run_pretraining.sh looks by default; with another
#                               DATA_DIR pass /workspace/data/... paths to it.
#   $RESULTS_DIR             -> /workspace/electra/results  (the launchers' default output root)
# Environment:
#   IMAGE               image (default: electra-tf2)
#   DATA_DIR            host data folder (default: <repo>/data)
#   RESULTS_DIR         host results folder (default: <repo>/results; created if missing)
#   NV_VISIBLE_DEVICES  GPUs to expose: all (default) or a list such as 0,1
#   DOCKER_ARGS         extra `docker run` arguments, split on spaces (e.g. "-e NCCL_DEBUG=INFO")
# As in NVIDIA's recipe: host networking (multi-node NCCL/Horovod), 1 GB of shared memory,
# unlimited locked memory and a 64 MB stack. Files written to the mounts belong to the
# container's user (root).
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
image="${IMAGE:-electra-tf2}"
data_dir="${DATA_DIR:-$repo_dir/data}"
results_dir="${RESULTS_DIR:-$repo_dir/results}"
devices="${NV_VISIBLE_DEVICES:-all}"
read -r -a extra_args <<< "${DOCKER_ARGS:-}"

[[ -d "$data_dir" ]] || { echo "error: data folder '$data_dir' does not exist (DATA_DIR)" >&2; exit 1; }
mkdir -p "$results_dir"
# Absolute paths: docker takes a relative -v source for a volume name.
data_dir="$(cd "$data_dir" && pwd)"
results_dir="$(cd "$results_dir" && pwd)"

if [[ "$devices" == all ]]; then
  gpus=all
else
  gpus="\"device=$devices\""  # quoted, or docker splits a list like 0,1 at the comma
fi
tty_args=()
if [[ -t 0 && -t 1 ]]; then tty_args=(-it); fi
command=("$@")
if (( ${#command[@]} == 0 )); then command=(bash); fi

exec docker run --rm "${tty_args[@]}" \
  --gpus "$gpus" \
  --net=host \
  --shm-size=1g \
  --ulimit memlock=-1 \
  --ulimit stack=67108864 \
  -v "$repo_dir":/workspace/electra \
  -v "$data_dir":/workspace/data \
  -v "$results_dir":/workspace/electra/results \
  -e DATA_DIR=/workspace/data \
  -w /workspace/electra \
  "${extra_args[@]}" \
  "$image" "${command[@]}"
