#!/usr/bin/env bash
# Start the container (built by scripts/docker/build.sh) with the repository, the data folder
# and the results folder mounted, and run COMMAND in it (default: an interactive bash).
#
# Usage: bash scripts/docker/launch.sh [COMMAND [ARGS...]]
# Example: bash scripts/docker/launch.sh bash scripts/quickstart.sh
#   e.g. bash scripts/docker/launch.sh bash scripts/quickstart.sh
#        bash scripts/docker/launch.sh bash scripts/run_pretraining.sh
# Mounts (host -> container):
#   this repository          -> /workspace/electra          (the code you edit, not the image's copy)
#   $DATA_DIR                -> /workspace/data, with DATA_DIR=/workspace/data set inside, where
#                               data/create_datasets_from_start.sh writes. The default, the
#                               repository's data/, is also /workspace/electra/data, where
#                               scripts/run_pretraining.sh looks by default; with another
#                               DATA_DIR pass /workspace/data/... paths to it.
#   $RESULTS_DIR             -> /workspace/electra/results  (the launchers' default output root)
# Environment:
#   IMAGE                   image (default: electra-tf2)
#   DATA_DIR                host data folder (default: <repo>/data)
#   RESULTS_DIR             host results folder (default: <repo>/results; created if missing)
#   NV_VISIBLE_DEVICES      GPUs to expose: all, a list such as 0,1, or none. Default: all when
#                           `nvidia-smi -L` lists a GPU on this host, else none.
#   CONTAINER_ENGINE        docker or podman (default: docker when its daemon answers, else podman)
#   CONTAINER_ENGINE_FLAGS  flags before `run`, e.g. "--runtime runc"
#   CONTAINER_RUN_FLAGS     extra `run` flags, split on spaces, e.g. "-e NCCL_DEBUG=INFO" or
#                           "--ulimit nofile=20000:20000" (docs/container.md)
# Always: host networking (multi-node NCCL/Horovod) and 1 GB of shared memory. With GPUs, as in
# NVIDIA's recipe, also unlimited locked memory and a 64 MB stack; Docker gets --gpus, Podman the
# CDI devices nvidia.com/gpu=... (NVIDIA Container Toolkit). Files written to the mounts belong
# to the container's user (root; with rootless Podman, you).
set -euo pipefail

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib/args.sh"
electra_help_if_asked "${1:-}"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(cd "$script_dir/../.." && pwd)"
image="${IMAGE:-electra-tf2}"
data_dir="${DATA_DIR:-$repo_dir/data}"
results_dir="${RESULTS_DIR:-$repo_dir/results}"
read -r -a extra_args <<< "${CONTAINER_RUN_FLAGS:-}"
# shellcheck source=engine.sh
source "$script_dir/engine.sh"

host_has_gpus() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

devices="${NV_VISIBLE_DEVICES:-}"
if [[ -z "$devices" ]]; then
  if host_has_gpus; then devices=all; else devices=none; fi
fi
if [[ ! "$devices" =~ ^(all|none|[A-Za-z0-9-]+(,[A-Za-z0-9-]+)*)$ ]]; then
  echo "error: NV_VISIBLE_DEVICES='$devices': use all, none, or GPU indices such as 0,1" >&2
  exit 1
fi
[[ -d "$data_dir" ]] || { echo "error: data folder '$data_dir' does not exist (DATA_DIR)" >&2; exit 1; }
choose_container_engine

# gpu_args: the engine's way to expose $devices, plus the limits NCCL wants (pinned memory).
gpu_args=()
if [[ "$devices" != none ]]; then
  if [[ "$engine_kind" == docker ]]; then
    if [[ "$devices" == all ]]; then
      gpu_args=(--gpus all)
    else
      gpu_args=(--gpus "\"device=$devices\"")  # quoted, or docker splits a list like 0,1 at the comma
    fi
  else
    IFS=, read -r -a device_list <<< "$devices"
    for device in "${device_list[@]}"; do gpu_args+=(--device "nvidia.com/gpu=$device"); done
    gpu_args+=(--security-opt label=disable)  # SELinux hosts: let the container reach the devices
  fi
  gpu_args+=(--ulimit memlock=-1 --ulimit stack=67108864)
fi

mkdir -p "$results_dir"
# Absolute paths: docker takes a relative -v source for a volume name.
data_dir="$(cd "$data_dir" && pwd)"
results_dir="$(cd "$results_dir" && pwd)"

tty_args=()
if [[ -t 0 && -t 1 ]]; then tty_args=(-it); fi
command=("$@")
if (( ${#command[@]} == 0 )); then command=(bash); fi

exec "${engine[@]}" run --rm "${tty_args[@]}" \
  "${gpu_args[@]}" \
  --net=host \
  --shm-size=1g \
  -v "$repo_dir":/workspace/electra \
  -v "$data_dir":/workspace/data \
  -v "$results_dir":/workspace/electra/results \
  -e DATA_DIR=/workspace/data \
  -w /workspace/electra \
  "${extra_args[@]}" \
  "$image" "${command[@]}"
