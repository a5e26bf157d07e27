#!/usr/bin/env bash
# From-scratch comparison at convergence (issue 15): runs long enough that plain's validation
# curve has flattened, headline arms at 5 seeds, steps equal across arms.
#
# Tasks (lab/src/vectorgate_lab/compare/tasks/__init__.py):
#   charlm_long: GPT-2-style char-LM, 4 layers, d = 128, context 64, batch 32, 1,500 steps
#                (3.1M training characters of 4.6M), 20 evaluations on 256 held-out windows.
#   vit_long:    timm ViT (depth 4, d = 64) on 4,000 MNIST digits, 3,000 steps of 64 with random
#                shifts of up to 2 pixels (the same for every arm), 20 evaluations on 1,000 digits.
# Arms: plain; vectorgate (default init); the from_scratch preset (random g, c = 0.5);
#   LAuReL-LR (rank 16); Hyper-Connections (dynamic, n = 4) on the ViT.
#   mHC costs 1.5 s (char-LM) and 0.7 s (ViT) a step on one CPU thread (Sinkhorn iterations),
#   5 to 20 times plain: it is left for a machine with more cores or a GPU (--scale, --device).
# Two processes of one torch thread fill docs/results/converged/ through their own shard;
# rerunning resumes (a run already recorded is skipped). One seed at a time over all arms, so a
# stopped sweep leaves paired seeds.
#
# Usage: benchmarks/run_converged_comparison.sh [extra args for every `vectorgate-lab compare`]
set -euo pipefail
cd "$(dirname "$0")/.."
VG="${VG:-.venv/bin/vectorgate-lab}"
OUT=docs/results/converged
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
EXTRA=(--references plain "$@")
PRESET="vectorgate[init=random,init_curvature=0.5]"

source benchmarks/_run_seeds.sh

run_seeds "$OUT" a 5 charlm_long -- plain vectorgate "$PRESET" "laurel_lr[rank=16]" &
A=$!
run_seeds "$OUT" b 5 vit_long -- plain vectorgate "$PRESET" "laurel_lr[rank=16]" "hc_dynamic[n=4]" &
B=$!
status=0
for pid in $A $B; do wait "$pid" || status=1; done
"$VG" compare --report-only --output-dir "$OUT" --markdown docs/results_converged.md --references plain || status=1
exit $status
