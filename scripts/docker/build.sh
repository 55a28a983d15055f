#!/usr/bin/env bash
# Build the GPU container image from the repository's Dockerfile.
#
# Usage: bash scripts/docker/build.sh [DOCKER_BUILD_ARGS...]
#   Extra arguments go to `docker build`, e.g.
#     bash scripts/docker/build.sh --build-arg HOROVOD_BUILD_CUDA_CC_LIST=80,90   # faster Horovod build
#     bash scripts/docker/build.sh --build-arg BASE_IMAGE=my/tensorflow:2.21.0-gpu
# Environment: IMAGE   image name and tag (default: electra-tf2)
# Needs a Docker engine; the build downloads the base image and packages (about 30 minutes,
# most of it Horovod's CUDA build).
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
image="${IMAGE:-electra-tf2}"

docker build --rm -t "$image" "$@" "$repo_dir"
