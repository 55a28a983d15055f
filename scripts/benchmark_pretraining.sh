#!/usr/bin/env bash
# Pretraining throughput of ELECTRA-small at sequence length 128 on this machine: this recipe
# (fp32 and bf16, with and without XLA) and, in the same run, the same step written with
# keras-hub's ElectraBackbone and in Hugging Face transformers on PyTorch.
#
# Usage: bash scripts/benchmark_pretraining.sh [scripts/benchmark_pretraining.py flags...]
# Example: bash scripts/benchmark_pretraining.sh --model_size base --batch_size 16 --steps 10 --configs tf-bf16,torch-bf16
# The flags are listed with their defaults in docs/flags.md.
# keras-hub is installed apart from the test environment, whose pins it would change (its
# tensorflow-text dependency pulls the full tensorflow wheel over tensorflow-cpu):
#   .venv/bin/pip install --no-deps --target .keras-hub keras-hub==0.32.0
# Without it, leave keras_hub-* out of --configs.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_dir/scripts/lib/args.sh"
electra_help_if_asked "$@"
source "$repo_dir/scripts/setup_env.sh" --test
cd "$repo_dir"
keras_hub=()
if [[ -d "$repo_dir/.keras-hub/keras_hub" ]]; then keras_hub=(--keras_hub_path "$repo_dir/.keras-hub"); fi
exec python "$repo_dir/scripts/benchmark_pretraining.py" "${keras_hub[@]}" "$@"
