#!/usr/bin/env bash
# Run the whole test suite on a machine that has only Python 3.10+:
# creates or reuses the virtual environment, installs what is needed (Horovod is built from
# source the first time, about 5 minutes on 2 cores), runs pytest. The Slurm test installs and
# starts a local Slurm itself (root and apt-get needed; otherwise it says why it skips).
#
# Usage: bash scripts/test.sh [pytest arguments...]
# Example: bash scripts/test.sh -k tokenization -x
# (pytest's own --help: python -m pytest --help, in the environment.)
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_dir/scripts/lib/args.sh"
electra_help_if_asked "$@"
source "$repo_dir/scripts/setup_env.sh" --test
bash "$repo_dir/scripts/install_horovod.sh"
cd "$repo_dir"
exec python -m pytest "$@"
