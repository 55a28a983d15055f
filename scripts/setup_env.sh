#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install what it needs.
# Usage: source scripts/setup_env.sh [--test]     (or bash scripts/setup_env.sh: set up only)
#   --test    also install requirements-test.txt (pytest, PyTorch, transformers)
# Example: source scripts/setup_env.sh && python run_pretraining.py --help
# Environment: PYTHON (interpreter to build the venv with, default python3),
#              ELECTRA_VENV (venv folder, default <repo>/.venv; exported, so that the launchers
#              started from here use the same one).
# Installs a requirements file only when it changed since its last install (hash stamps).
# Every launcher sources it; scripts/test.sh and the benchmarks with --test.
# In the project's container image (ELECTRA_IN_CONTAINER=1, set by the Dockerfile) it installs
# nothing: the image's Python environment, first on PATH, has TensorFlow, Horovod and the rest.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_dir/scripts/lib/args.sh"
# Only the first argument counts: `source` without arguments passes on the caller's (a launcher's).
if electra_help_requested "${1:-}"; then
  electra_usage "${BASH_SOURCE[0]}"
  return 0 2>/dev/null || exit 0
fi

if [[ "${ELECTRA_IN_CONTAINER:-}" == 1 ]]; then
  if [[ "${1:-}" == "--test" ]]; then
    echo "error: the container image has the runtime requirements only; run the tests outside it" >&2
    exit 1
  fi
  return 0
fi
venv_dir="${ELECTRA_VENV:-$repo_dir/.venv}"
python_bin="${PYTHON:-python3}"

requirements=("$repo_dir/requirements.txt")
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  requirements=("$repo_dir/requirements-gpu.txt")
fi
if [[ "${1:-}" == "--test" ]]; then
  requirements+=("$repo_dir/requirements-test.txt")
fi

if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "error: Python 3.10 or newer is needed; $python_bin is $("$python_bin" --version 2>&1)" >&2
  exit 1
fi
# One set-up at a time per venv: two launchers started together must not run pip into the same
# folder at once (the second waits, then finds everything installed).
mkdir -p "$(dirname "$venv_dir")"
exec {setup_lock}>"$venv_dir.setup-lock"
flock "$setup_lock"
if [[ ! -x "$venv_dir/bin/python" ]]; then
  echo "Creating virtual environment in $venv_dir"
  "$python_bin" -m venv "$venv_dir"
fi

# Packages that would pull the `tensorflow` package next to tensorflow-cpu: no dependencies.
nodeps="$repo_dir/requirements-nodeps.txt"
# One stamp per requirements file, so the quick start (requirements.txt) and the tests
# (requirements.txt + requirements-test.txt) do not reinstall each other's environment.
changed=()
for r in "${requirements[@]}" "$nodeps"; do
  stamp="$venv_dir/.installed-$(basename "$r").sha256"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$(sha256sum < "$r")" ]]; then changed+=("$r"); fi
done
if (( ${#changed[@]} )); then
  echo "Installing ${requirements[*]##*/} ${nodeps##*/} into $venv_dir (changed: ${changed[*]##*/})"
  "$venv_dir/bin/python" -m pip install --quiet --upgrade pip
  args=()
  for r in "${requirements[@]}"; do args+=(-r "$r"); done  # together, so pip keeps every pin
  "$venv_dir/bin/python" -m pip install --quiet "${args[@]}"
  "$venv_dir/bin/python" -m pip install --quiet --no-deps -r "$nodeps"
  "$venv_dir/bin/python" -c "import tensorflow_text" \
    || { echo "error: tensorflow-text does not load with this TensorFlow (see $nodeps)" >&2; exit 1; }
  for r in "${requirements[@]}" "$nodeps"; do sha256sum < "$r" > "$venv_dir/.installed-$(basename "$r").sha256"; done
fi
flock --unlock "$setup_lock"
exec {setup_lock}>&-
export PATH="$venv_dir/bin:$PATH"
export VIRTUAL_ENV="$venv_dir"
export ELECTRA_VENV="$venv_dir"
