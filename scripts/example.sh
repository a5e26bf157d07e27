#!/usr/bin/env bash
# Set up .venv and run the main job. Extra arguments go to the example script.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
cd "$root"
exec .venv/bin/python examples/bert_example.py "$@"
