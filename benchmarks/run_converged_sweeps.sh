#!/usr/bin/env bash
# Issue 15, after benchmarks/run_converged_comparison.sh: equal parameters, a second peer at full
# length, learning rate, depth. Two queues, one per core; every arm at 5 seeds, seed-major (a
# stopped queue leaves paired seeds).
#
# 1. Equal parameters (full length, into docs/results/converged/ so they pair with the headline
#    arms): a low-rank gate whose trainable parameters are within 2% of plain's: rank 6 on the
#    char-LM (+14,336 = +1.8% of 812,288), rank 1 on the ViT (+2,048 = +1.5% of 139,018).
# 2. Queue A: dynamic Hyper-Connections (n=2) on charlm_long at full length (the ViT ran n=4; n=2
#    costs 1.8x plain per step here, n=4 2.6x); then mHC (n=2; 3.7x plain per step, too costly at
#    full length on this CPU) on charlm_sweep_4l at plain's best lr; then depth 8 for the four
#    sweep arms.
# 3. Queue B: learning rate on charlm_sweep_4l: plain at 1/3, 1 and 3 times the task's lr (3e-3),
#    3 seeds, picks plain's best; then plain, vectorgate, the from_scratch preset and BEST_PEER at
#    that lr and 3x it; then depth 16 for the first three arms, then BEST_PEER at depth 16.
# The sweeps are 200 steps (0.4M characters, early training), which the report says.
# Results: docs/results/converged -> docs/results_converged.md, docs/results/sweeps ->
# docs/results_sweeps.md.
#
# Usage: BEST_PEER="laurel_lr[rank=16]" benchmarks/run_converged_sweeps.sh [extra compare args]
set -euo pipefail
cd "$(dirname "$0")/.."
VG="${VG:-.venv/bin/vectorgate-lab}"
PY="${PY:-.venv/bin/python}"
CONVERGED=docs/results/converged
OUT=docs/results/sweeps
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
EXTRA=(--references plain "$@")
PRESET="init=random,init_curvature=0.5"
BEST_PEER="${BEST_PEER:-laurel_lr[rank=16]}"
LR_GRID=("plain[lr_mult=0.3333]" plain "plain[lr_mult=3]")

source benchmarks/_run_seeds.sh

with_lr() {  # with_lr MULT ARM: the arm's label with lr_mult=MULT added
  local mult=$1 arm=$2
  if [[ "$mult" == "1" ]]; then echo "$arm"; return; fi
  if [[ "$arm" == *"]" ]]; then echo "${arm%]},lr_mult=$mult]"; else echo "$arm[lr_mult=$mult]"; fi
}

best_lr() {  # plain's best lr multiple on charlm_sweep_4l; fails until the grid's 3 seeds are in
  "$PY" - "$OUT" "${LR_GRID[@]}" <<'PY'
import statistics, sys
from pathlib import Path
from vectorgate_lab.compare.runner import load_runs
out, grid = sys.argv[1], sys.argv[2:]
runs = [r for r in (load_runs(out) if Path(out).exists() else []) if r["task"] == "charlm_sweep_4l"
        and "error" not in r and r["variant"] in grid and r["seed"] < 3]
if len(runs) < 3 * len(grid):
    sys.exit(1)
mean = {v: statistics.fmean(r["final"] for r in runs if r["variant"] == v) for v in grid}
print(dict(zip(grid, ("0.3333", "1", "3")))[min(mean, key=mean.get)])
PY
}

three_times() {  # three_times MULT: 3x a multiple of the grid, spelled as the grid spells it
  case $1 in 0.3333) echo 1 ;; 1) echo 3 ;; 3) echo 9 ;; *) echo "not a grid multiple: $1" >&2; return 1 ;; esac
}

sweep_arms() {  # sweep_arms MULT: the four sweep arms at lr multiple MULT
  local arm
  for arm in plain vectorgate "vectorgate[$PRESET]" "$BEST_PEER"; do with_lr "$1" "$arm"; done
}

status=0
run_seeds "$CONVERGED" eq-a 5 charlm_long -- "vectorgate[rank=6]" || status=1
run_seeds "$CONVERGED" eq-b 5 vit_long -- "vectorgate[rank=1]" || status=1

(
  run_seeds "$CONVERGED" hc 5 charlm_long -- "hc_dynamic[n=2]"
  until BEST=$(best_lr); do sleep 30; done
  run_seeds "$OUT" mhc 5 charlm_sweep_4l -- "$(with_lr "$BEST" "mhc[n=2]")"
  mapfile -t arms < <(sweep_arms "$BEST")
  run_seeds "$OUT" depth-8 5 charlm_sweep_8l -- "${arms[@]}"
) &
A=$!
(
  run_seeds "$OUT" lr 3 charlm_sweep_4l -- "${LR_GRID[@]}"
  BEST=$(best_lr)
  echo "plain's best lr multiple on charlm_sweep_4l: $BEST" >&2
  HIGH=$(three_times "$BEST")
  mapfile -t at_best < <(sweep_arms "$BEST")
  mapfile -t at_high < <(sweep_arms "$HIGH")
  run_seeds "$OUT" lr 5 charlm_sweep_4l -- "${at_best[@]}" "${at_high[@]}"
  run_seeds "$OUT" depth-16 5 charlm_sweep_16l -- "${at_best[@]:0:3}"
  run_seeds "$OUT" depth-16-peer 5 charlm_sweep_16l -- "${at_best[3]}"
) &
B=$!
for pid in $A $B; do wait "$pid" || status=1; done
BEST=$(best_lr) || status=1
HIGH=$(three_times "${BEST:-1}")
"$VG" compare --report-only --output-dir "$OUT" --markdown docs/results_sweeps.md \
  --references "$(with_lr "${BEST:-1}" plain)" "$(with_lr "$HIGH" plain)" || status=1
"$VG" compare --report-only --output-dir "$CONVERGED" --markdown docs/results_converged.md --references plain || status=1
exit $status
