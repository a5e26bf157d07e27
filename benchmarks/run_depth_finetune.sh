#!/usr/bin/env bash
# Issue 21: does the depth-aware default (c capped at log(65504) / 12 = 0.92 and started at
# 0.46 on the 6-layer MiniLM) cost the fine-tuning accuracy of 0.4's default (c = 1, no cap)?
# Pretrained MiniLM, full fine-tuning at the task's lr, 5 paired seeds, Rotten Tomatoes and
# SMS spam. Results: docs/results/depth_finetune -> docs/results_depth_finetune.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VG="${VG:-.venv/bin/vectorgate-lab}"
OUT=docs/results/depth_finetune
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
EXTRA=(--references plain "vectorgate[log_gain_budget=none]" "$@")
source benchmarks/_run_seeds.sh
ARMS=(plain "vectorgate[log_gain_budget=none]" vectorgate)
status=0
run_seeds "$OUT" rt 5 rt_full -- "${ARMS[@]}" || status=1
run_seeds "$OUT" sms 5 sms_full -- "${ARMS[@]}" || status=1
"$VG" compare --report-only --output-dir "$OUT" --markdown docs/results_depth_finetune.md \
  --references plain "vectorgate[log_gain_budget=none]" || status=1
exit $status
