#!/usr/bin/env bash
# Build the container image from the repository's Dockerfile, with Docker or Podman.
#
# Usage: bash scripts/docker/build.sh [BUILD_ARGS...]
# Example: bash scripts/docker/build.sh --build-arg ACCELERATOR=cpu
#   Extra arguments go to `docker build` / `podman build`, e.g.
#     bash scripts/docker/build.sh                                              # GPU image
#     bash scripts/docker/build.sh --build-arg HOROVOD_BUILD_CUDA_CC_LIST=80,90  # faster Horovod build
#     bash scripts/docker/build.sh --build-arg ACCELERATOR=cpu --build-arg BASE_IMAGE=python:3.11-slim
#   The build arguments (BASE_IMAGE, ACCELERATOR, WITH_HOROVOD, ...) are described at the top of
#   the Dockerfile and in docs/container.md.
# Environment:
#   IMAGE                   image name and tag (default: electra-tf2)
#   CONTAINER_ENGINE        docker or podman (default: docker when its daemon answers, else podman)
#   CONTAINER_ENGINE_FLAGS  flags before `build`, e.g. "--runtime runc"
# With Podman the image is built in Docker's format (--format docker), which keeps the
# Dockerfile's SHELL. The GPU build downloads the base image and packages: about 30 minutes,
# most of it Horovod's CUDA build.
set -euo pipefail

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib/args.sh"
electra_help_if_asked "${1:-}"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(cd "$script_dir/../.." && pwd)"
image="${IMAGE:-electra-tf2}"
# shellcheck source=engine.sh
source "$script_dir/engine.sh"
choose_container_engine

format_args=()
if [[ "$engine_kind" == podman ]]; then format_args=(--format docker); fi

exec "${engine[@]}" build --rm "${format_args[@]}" -t "$image" "$@" "$repo_dir"
