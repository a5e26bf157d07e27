#!/usr/bin/env bash
# The from-scratch CPU comparison behind docs/results_scratch.md (about 40 minutes on 2 CPU cores).
#
# vit_mnist and charlm_shakespeare, every residual variant, 3 seeds: short runs (600 and 350
# steps), so early training only; the longer, converged comparison is still to come. These runs
# were made with vectorgate 0.1, whose only gate init was random g with c = init_curvature:
# the arms spell that `init=random` so they mean the same under 0.2's API.
# Rerunning resumes (recorded runs are skipped).
#
# Usage: benchmarks/run_scratch_comparison.sh [extra args for every `vectorgate-lab compare`, e.g. --scale 10 --device cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
VG="${VG:-.venv/bin/vectorgate-lab}"
OUT=docs/results/scratch
ALL=(plain "vectorgate[init=random]" "vectorgate_scalar[init=random]" "vectorgate_lowrank[init=random]"
     highway rezero layerscale gateskip)
# The small sweep (init_curvature, curvature cap, gate learning rate).
SWEEP=("vectorgate[init=random,init_curvature=0.5]" "vectorgate[init=random,init_curvature=0.5,max_curvature=1]"
       "vectorgate[init=random,gate_lr_mult=5]")
COMMON=(--seeds 3 --output-dir "$OUT" --threads 1 --no-progress "$@")
"$VG" compare --shard a --tasks vit_mnist charlm_shakespeare --variants "${ALL[@]}" "${COMMON[@]}"
"$VG" compare --shard a --tasks vit_mnist charlm_shakespeare --variants "${SWEEP[@]}" "${COMMON[@]}"
"$VG" compare --report-only --output-dir "$OUT" --markdown docs/results_scratch.md \
  --note "vectorgate 0.1 runs (labels in 0.2's spelling); 2 processes x 1 torch thread on a 2-core x86_64 VM shared with other jobs: times are inflated"
