# ELECTRA for TensorFlow 2: the container image (docs/container.md).
#   build:  bash scripts/docker/build.sh [BUILD_ARGS...]   (docker or podman build -t electra-tf2 .)
#   run:    bash scripts/docker/launch.sh [COMMAND...]
#
# Build arguments:
#   BASE_IMAGE     the image to start from. Default: TensorFlow's own GPU image, which has
#                  TensorFlow built with CUDA and cuDNN in its Python; Docker Hub tags it
#                  tensorflow/tensorflow:<version>-gpu, so TF_VERSION must equal the TensorFlow pin
#                  of requirements.txt. Any image with a Python 3.10+ `python3` will do for
#                  ACCELERATOR=cpu (e.g. python:3.11-slim, debian:bookworm with python3).
#   ACCELERATOR    gpu (default): keep the base image's TensorFlow, which must be a CUDA build, and
#                  build Horovod with NCCL. cpu: install tensorflow-cpu==TF_VERSION unless the
#                  base image has TensorFlow, and build Horovod for CPUs (Gloo) only.
#   WITH_HOROVOD   true (default) or false. Without Horovod the launchers start several processes
#                  with tf.distribute instead (scripts/launch_processes.sh).
#   HOROVOD_BUILD_CUDA_CC_LIST  e.g. 80,90: Horovod's GPU kernels for these architectures only
#                  (faster build); empty means every one nvcc supports.
ARG TF_VERSION=2.21.0
ARG BASE_IMAGE=tensorflow/tensorflow:${TF_VERSION}-gpu
FROM ${BASE_IMAGE}
ARG TF_VERSION
ARG ACCELERATOR=gpu
ARG WITH_HOROVOD=true

# bash with pipefail, so a failing command inside a pipe fails the build (hadolint DL4006). The
# RUN lines stay POSIX sh all the same: hadolint's ShellCheck takes them for sh after an ENV.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The project's Python environment is a virtual environment at /opt/venv, first on PATH. It sees
# the base image's packages (--system-site-packages: TensorFlow's GPU build stays as the base
# image has it) and everything pip adds goes into it, so a distribution Python marked "externally
# managed" (PEP 668) is never modified. ELECTRA_IN_CONTAINER=1 tells scripts/setup_env.sh, which
# every launcher sources, to use this environment as it is: no venv, no pip in the mounted
# repository. No .pyc files: the repository is mounted from the host and must stay the user's.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    ELECTRA_IN_CONTAINER=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Wrong spellings of the build arguments stop the build here, not after half an hour.
RUN case "${ACCELERATOR}" in gpu|cpu) ;; *) echo "ACCELERATOR must be gpu or cpu, not '${ACCELERATOR}'" >&2; exit 1 ;; esac \
 && case "${WITH_HOROVOD}" in true|false) ;; *) echo "WITH_HOROVOD must be true or false, not '${WITH_HOROVOD}'" >&2; exit 1 ;; esac

# Tools to build Horovod: a C++ compiler, make, patch; and, for its NCCL (GPU) operations, nvcc
# and the CUDA headers. The TensorFlow GPU image has CUDA's run-time libraries but may lack the
# compiler: then install nvcc and the headers of the image's own CUDA version (CUDA_VERSION, set
# by the nvidia/cuda images it derives from) from NVIDIA's apt repository, which those images
# configure. Likewise the NCCL header matching an installed libnccl2; without one,
# install_horovod.sh uses the NCCL of the nvidia-nccl-cu12 wheel that tensorflow[and-cuda] has.
# DL3008 (pin apt versions): the CUDA packages carry their version in their name and must match
# the base image's CUDA and NCCL; the other tools follow the base image's release.
# hadolint ignore=DL3008
RUN if [ "${WITH_HOROVOD}" = true ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends g++ make patch \
      && if [ "${ACCELERATOR}" = gpu ] && ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then \
           cuda_pkg="$(echo "${CUDA_VERSION:?no nvcc and no CUDA_VERSION: use a base image with CUDA}" \
                       | cut -d. -f1,2 | tr . -)" \
           && apt-get install -y --no-install-recommends "cuda-nvcc-${cuda_pkg}" "cuda-cudart-dev-${cuda_pkg}"; \
         fi \
      && if [ "${ACCELERATOR}" = gpu ] && nccl="$(dpkg-query -W -f='${Version}' libnccl2 2>/dev/null)" \
            && [ ! -e /usr/include/nccl.h ]; then \
           apt-get install -y --no-install-recommends "libnccl-dev=${nccl}"; \
         fi \
      && rm -rf /var/lib/apt/lists/*; \
    fi

# --without-pip: the base's pip (visible through --system-site-packages) installs into the venv,
# so the base image needs no python3-venv / ensurepip.
RUN python3 -m venv --system-site-packages --without-pip /opt/venv \
 && python -c "import sys; assert sys.version_info >= (3, 10), sys.version" \
 && python -m pip --version

WORKDIR /workspace/electra

# Runtime dependencies (requirements-docker.txt is requirements.txt without its TensorFlow line),
# then tensorflow-text without its dependencies (it would pull the `tensorflow` package beside the
# image's own; requirements-nodeps.txt), then a check that TensorFlow is TF_VERSION and, for gpu,
# a CUDA build. tensorflow-cpu goes in only when ACCELERATOR=cpu and the base image has no
# TensorFlow, in the same pip call as the rest so that pip resolves every pin together.
COPY requirements-docker.txt requirements-nodeps.txt ./
RUN tf_package="" \
 && if [ "${ACCELERATOR}" = cpu ] && ! python -c "import tensorflow" 2>/dev/null; then \
      tf_package="tensorflow-cpu==${TF_VERSION}"; \
    fi \
 && python -m pip install --no-cache-dir ${tf_package:+"$tf_package"} -r requirements-docker.txt \
 && python -m pip install --no-cache-dir --no-deps -r requirements-nodeps.txt \
 && python -c "import tensorflow_text" \
 && python -c "import tensorflow as tf; v = tf.__version__; \
               assert v == '${TF_VERSION}', 'TensorFlow ' + v + ', expected ${TF_VERSION}'; \
               assert '${ACCELERATOR}' == 'cpu' or tf.test.is_built_with_cuda(), 'not a CUDA build'" \
 && if [ "${ACCELERATOR}" = gpu ]; then ! python -m pip show --quiet tensorflow-cpu 2>/dev/null; fi

# Horovod 0.28.1 built against this TensorFlow, with NCCL for gpu, Gloo only for cpu. Its build
# requirements are pinned here (install_horovod.sh would fetch missing ones unpinned). The slow
# build comes before the repository is copied, so code changes do not redo it.
ARG HOROVOD_BUILD_CUDA_CC_LIST=
COPY scripts/install_horovod.sh scripts/horovod-0.28.1-tf216.patch scripts/
RUN if [ "${WITH_HOROVOD}" = true ]; then \
      python -m pip install --no-cache-dir cmake==3.31.10 setuptools==84.2.1 wheel==0.48.0 packaging==26.4 \
      && if [ -z "${HOROVOD_BUILD_CUDA_CC_LIST}" ]; then unset HOROVOD_BUILD_CUDA_CC_LIST; fi \
      && if [ "${ACCELERATOR}" = gpu ]; then bash scripts/install_horovod.sh --gpu; else bash scripts/install_horovod.sh; fi \
      && horovodrun --check-build; \
    fi

COPY . .
ENV PYTHONPATH=/workspace/electra
