#!/usr/bin/env bash
# Set up .venv and run the whole test suite (and ruff). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
cd "$root"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
