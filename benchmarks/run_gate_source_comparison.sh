#!/usr/bin/env bash
# Issue 13: the quality cost of GateConfig(gate_source="normed") (the gate reads the pre-norm's
# output instead of x, so that stack_gate_projections applies to pre-norm models). One arm,
# vectorgate[gate_source=normed], 5 seeds, paired with the arms already recorded:
# - vit_long (timm ViT, 3,000 steps) into docs/results/converged/ (plain, vectorgate, ...);
# - charlm_sweep_4l (GPT-2 char-LM, 200 steps) into docs/results/sweeps/ at the task's lr, which
#   benchmarks/run_converged_sweeps.sh found to be plain's best (grid 1/3, 1, 3 times).
# Usage: benchmarks/run_gate_source_comparison.sh [extra compare args]
set -euo pipefail
cd "$(dirname "$0")/.."
VG="${VG:-.venv/bin/vectorgate-lab}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
EXTRA=(--references plain "$@")
source benchmarks/_run_seeds.sh

run_seeds docs/results/converged normed 5 vit_long -- "vectorgate[gate_source=normed]"
run_seeds docs/results/sweeps normed 5 charlm_sweep_4l -- "vectorgate[gate_source=normed]"
