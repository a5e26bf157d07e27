#!/usr/bin/env bash
# Issue 21: the depth-aware default (patch() caps each gate's curvature at log(65504) / n_sites)
# against plain on the char-LM at 4, 8, 16 and 32 layers (d = 128, 200 steps: early training,
# where the 0.4 default fell behind at 16 layers), and at 3x plain's best lr at 4 layers; at 16
# layers beside the peers built for depth (ReZero, LayerScale, LAuReL-LR).
# Two queues, one per core, seed-major (a stopped queue leaves paired seeds; rerunning resumes).
# The 0.4 default is the arm vectorgate[log_gain_budget=none].
# Results: docs/results/depth -> docs/results_depth.md.
#
# Usage: benchmarks/run_depth_comparison.sh [extra compare args]
set -euo pipefail
cd "$(dirname "$0")/.."
VG="${VG:-.venv/bin/vectorgate-lab}"
OUT=docs/results/depth
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
EXTRA=(--references plain "$@")
source benchmarks/_run_seeds.sh

status=0
(
  run_seeds "$OUT" d32 5 charlm_sweep_32l -- plain vectorgate
  run_seeds "$OUT" d16-peers-a 5 charlm_sweep_16l -- laurel_lr
  run_seeds "$OUT" d32-old 3 charlm_sweep_32l -- "vectorgate[log_gain_budget=none]"
) &
A=$!
(
  run_seeds "$OUT" d16 5 charlm_sweep_16l -- plain vectorgate
  run_seeds "$OUT" d8 5 charlm_sweep_8l -- plain vectorgate
  run_seeds "$OUT" d4 5 charlm_sweep_4l -- plain vectorgate "plain[lr_mult=3]" "vectorgate[lr_mult=3]"
  run_seeds "$OUT" d16-peers-b 5 charlm_sweep_16l -- rezero layerscale
  run_seeds "$OUT" d16-old 5 charlm_sweep_16l -- "vectorgate[log_gain_budget=none]"
) &
B=$!
for pid in $A $B; do wait "$pid" || status=1; done
"$VG" compare --report-only --output-dir "$OUT" --markdown docs/results_depth.md \
  --references plain "plain[lr_mult=3]" laurel_lr || status=1
exit $status
