#!/usr/bin/env bash
# SQuAD fine-tuning and inference throughput of run_tf_squad.py on this machine (base-width
# ELECTRA, sequence length 384, random weights, synthetic data from the shipped sample corpus),
# next to the same inference in transformers' PyTorch ElectraForQuestionAnswering. Prints
# numbers, asserts nothing; see scripts/benchmark_squad.py for what is timed.
#
# Usage: bash scripts/benchmark_squad.sh [--num_hidden_layers N] [--train_steps S] [--predict_batch_size B] [--xla] ...
# Example: bash scripts/benchmark_squad.sh --num_hidden_layers 2 --train_steps 3
# The flags are scripts/benchmark_squad.py's, listed with their defaults in docs/flags.md.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_dir/scripts/lib/args.sh"
electra_help_if_asked "$@"
# --test: the PyTorch reference comes from transformers, a test requirement.
source "$repo_dir/scripts/setup_env.sh" --test
exec python "$repo_dir/scripts/benchmark_squad.py" "$@"
