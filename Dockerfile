# ELECTRA for TensorFlow 2: GPU container.
#   build:  bash scripts/docker/build.sh   (docker build -t electra-tf2 .)
#   run:    bash scripts/docker/launch.sh [COMMAND...]
#
# Base: TensorFlow's own GPU image, which has TensorFlow built with CUDA and cuDNN and its
# Python. Docker Hub tags it tensorflow/tensorflow:<version>-gpu (as 2.17.0-gpu, 2.18.0-gpu),
# so TF_VERSION must equal the TensorFlow pin of requirements.txt. Another base with
# TensorFlow TF_VERSION in its `python`: --build-arg BASE_IMAGE=...
ARG TF_VERSION=2.21.0
ARG BASE_IMAGE=tensorflow/tensorflow:${TF_VERSION}-gpu
FROM ${BASE_IMAGE}
ARG TF_VERSION

# bash with pipefail, so a failing command inside a pipe fails the build (hadolint DL4006). The
# RUN lines stay POSIX sh all the same: hadolint's ShellCheck takes them for sh after an ENV.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# pip: no cache in the image, no version-check noise. PIP_BREAK_SYSTEM_PACKAGES lets pip add to
# the image's Python when that is a distribution Python marked "externally managed" (PEP 668);
# it changes nothing elsewhere.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1

# Tools to build Horovod: a C++ compiler, make, patch; and, for its NCCL (GPU) operations, nvcc
# and the CUDA headers. The TensorFlow GPU image has CUDA's run-time libraries but may lack the
# compiler: then install nvcc and the headers of the image's own CUDA version (CUDA_VERSION, set
# by the nvidia/cuda images it derives from) from NVIDIA's apt repository, which those images
# configure. Likewise the NCCL header matching an installed libnccl2; without one,
# install_horovod.sh uses the NCCL of the nvidia-nccl-cu12 wheel that tensorflow[and-cuda] has.
# DL3008 (pin apt versions): the CUDA packages carry their version in their name and must match
# the base image's CUDA and NCCL; the Ubuntu tools follow the base image's release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make patch \
 && if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then \
      cuda_pkg="$(echo "${CUDA_VERSION:?no nvcc and no CUDA_VERSION: use a base image with CUDA}" \
                  | cut -d. -f1,2 | tr . -)" \
      && apt-get install -y --no-install-recommends "cuda-nvcc-${cuda_pkg}" "cuda-cudart-dev-${cuda_pkg}"; \
    fi \
 && if nccl="$(dpkg-query -W -f='${Version}' libnccl2 2>/dev/null)" && [ ! -e /usr/include/nccl.h ]; then \
      apt-get install -y --no-install-recommends "libnccl-dev=${nccl}"; \
    fi \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/electra

# Runtime dependencies, with the image's TensorFlow left in place (requirements-docker.txt is
# requirements.txt without tensorflow-cpu); then check that it still is the GPU build.
COPY requirements-docker.txt requirements-nodeps.txt ./
RUN python -m pip install --no-cache-dir -r requirements-docker.txt \
 && python -m pip install --no-cache-dir --no-deps -r requirements-nodeps.txt \
 && python -c "import tensorflow_text" \
 && ! python -m pip show --quiet tensorflow-cpu 2>/dev/null \
 && python -c "import tensorflow as tf; v = tf.__version__; \
                assert v == '${TF_VERSION}' and tf.test.is_built_with_cuda(), v"

# Horovod 0.28.1 built against this TensorFlow, with NCCL. Its build requirements are pinned
# here (install_horovod.sh would fetch missing ones unpinned). The slow build comes before the
# repository is copied, so code changes do not redo it. HOROVOD_BUILD_CUDA_CC_LIST (e.g. 80,90)
# compiles Horovod's kernels for those GPU architectures only; empty means all nvcc supports.
ARG HOROVOD_BUILD_CUDA_CC_LIST=
COPY scripts/install_horovod.sh scripts/horovod-0.28.1-tf216.patch scripts/
RUN python -m pip install --no-cache-dir cmake==3.31.10 setuptools==84.2.1 wheel==0.48.0 packaging==26.4 \
 && if [ -z "${HOROVOD_BUILD_CUDA_CC_LIST}" ]; then unset HOROVOD_BUILD_CUDA_CC_LIST; fi \
 && bash scripts/install_horovod.sh --gpu \
 && horovodrun --check-build

COPY . .
ENV PYTHONPATH=/workspace/electra
