#!/usr/bin/env bash
# Pretraining throughput of ELECTRA-small at sequence length 128 on this machine: this recipe
# (fp32 and bf16, with and without XLA) and, in the same run, the same step in Hugging Face
# transformers on PyTorch.
#
# Usage: bash scripts/benchmark_pretraining.sh [scripts/benchmark_pretraining.py flags...]
# Example: bash scripts/benchmark_pretraining.sh --model_size base --batch_size 16 --steps 10 --configs tf-bf16,torch-bf16
# The flags are listed with their defaults in docs/flags.md.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_dir/scripts/lib/args.sh"
electra_help_if_asked "$@"
source "$repo_dir/scripts/setup_env.sh" --test
cd "$repo_dir"
exec python "$repo_dir/scripts/benchmark_pretraining.py" "$@"
