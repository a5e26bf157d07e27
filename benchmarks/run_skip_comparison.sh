#!/usr/bin/env bash
# The token-skipping comparison behind docs/skipping.md: accuracy (or bits per character)
# against the share of MLP-branch tokens skipped, 0% to 70%, for vectorgate's gate and two
# peers trained with the same SkipBudget (target 50%, penalty weight 1, warm-up over 30% of
# the steps): a GateSkip-style sigmoid gate that reads x (gateskip[gate_input=x]) and a
# Mixture-of-Depths-style scalar router (mod_router). Plain is the dense reference.
#
# Each arm is also trained without a budget (skip_budget=0: ordinary training) and skipped at
# inference only; on rt_full a lighter budget (penalty weight 0.1) as well.
#
# Tasks: the pretrained MiniLM fine-tuned on Rotten Tomatoes (rt_full: a run takes minutes, so
# 3 seeds, and 5 for the no-budget arms and plain), the timm ViT on MNIST and the GPT-2-style
# char-LM from scratch (5 seeds each).
# Two processes of one torch thread fill docs/results/skip/ through their own shard;
# rerunning resumes. Each run with a skip_budget key is scored at every skip ratio after
# training (thresholds calibrated on held-out data, see docs/skipping.md). On a 2-core x86_64
# CPU the first 94 runs took 1 h 35 min (03:03 to 04:38 UTC, 2026-11-29) in four processes, the
# 8 runs of the 5-seed phase about 17 min in two more.
#
# Usage: benchmarks/run_skip_comparison.sh [extra args for every `vectorgate-lab compare`, e.g. --scale 3 --device cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
VG="${VG:-.venv/bin/vectorgate-lab}"
OUT=docs/results/skip
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
EXTRA=("$@")

source benchmarks/_run_seeds.sh

# Pretrained model: the peers start near the plain residual (sigmoid(5) = 0.993), as our gate
# starts at it exactly.
(
  run_seeds "$OUT" a 3 rt_full -- plain "vectorgate[skip_budget=0.5]" "gateskip[gate_input=x,init_bias=5,skip_budget=0.5]" \
    "mod_router[skip_budget=0.5]" "vectorgate[skip_budget=0]" "vectorgate[skip_budget=0.5,skip_weight=0.1]" \
    "gateskip[gate_input=x,init_bias=5,skip_budget=0]" "mod_router[skip_budget=0]"
  # The arms the README quotes (trained without a budget) and plain, on to 5 seeds.
  run_seeds "$OUT" a 5 rt_full -- plain "vectorgate[skip_budget=0]" "gateskip[gate_input=x,init_bias=5,skip_budget=0]" \
    "mod_router[skip_budget=0]"
) &
A=$!
(
  for task in vit_mnist charlm_shakespeare; do
    run_seeds "$OUT" b 5 "$task" -- plain "vectorgate[skip_budget=0.5]" "gateskip[gate_input=x,skip_budget=0.5]" \
      "mod_router[skip_budget=0.5]" "vectorgate[skip_budget=0]" "gateskip[gate_input=x,skip_budget=0]" "mod_router[skip_budget=0]"
  done
) &
B=$!
status=0
for pid in $A $B; do wait "$pid" || status=1; done
"${VG%/vectorgate-lab}/python" -m vectorgate_lab.compare.skip_report "$OUT" --markdown docs/results_skipping.md || status=1
exit $status
