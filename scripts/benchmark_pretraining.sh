#!/usr/bin/env bash
# Pretraining throughput of ELECTRA-small at sequence length 128 on this machine: this recipe
# (fp32 and bf16, with and without XLA) and, in the same run, the same step in Hugging Face
# transformers on PyTorch. Extra arguments go to scripts/benchmark_pretraining.py
# (e.g. --model_size base --batch_size 16 --steps 10 --configs tf-bf16,torch-bf16).
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_dir/scripts/setup_env.sh" --test
cd "$repo_dir"
exec python scripts/benchmark_pretraining.py "$@"
