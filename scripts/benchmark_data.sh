#!/usr/bin/env bash
# Benchmark of the pretraining-data build on the shipped sample corpus: tokens/s and
# sentences/s with 1 and 2 processes, the same with a pure-Python WordPiece (transformers'
# BertTokenizerLegacy, the recipe's original tokenizer), and peak memory on the sample vs. the
# sample repeated 10 times (with --pure-python-large, both paths on it). Prints numbers,
# asserts nothing; see scripts/benchmark_data.py for how the corpus is sentence-split and how
# CPU time and memory are measured.
# Usage: bash scripts/benchmark_data.sh [--work-dir DIR] [--num-out-files N] [--large-copies K]
#                                        [--repeats R] [--pure-python-large]
# Example: bash scripts/benchmark_data.sh --repeats 3
# The flags are scripts/benchmark_data.py's, listed with their defaults in docs/flags.md.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_dir/scripts/lib/args.sh"
electra_help_if_asked "$@"
# --test: the pure-Python tokenizer comes from transformers, a test requirement.
source "$repo_dir/scripts/setup_env.sh" --test
exec python "$repo_dir/scripts/benchmark_data.py" "$@"
