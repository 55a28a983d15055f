#!/usr/bin/env bash
# Run the whole test suite on a machine that has only Python 3.10+:
# creates or reuses the virtual environment, installs what is needed, runs pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k tokenization -x`.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_dir/scripts/setup_env.sh" --test
cd "$repo_dir"
exec python -m pytest "$@"
