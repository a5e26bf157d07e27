#!/usr/bin/env bash
# Every GPU check and benchmark of the fused kernel (issue 4), in one run of about 6-8 min.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh        # from the repository root
#
# Runs on what a GPU machine has (torch + triton + transformers, no pip, no pytest needed):
# the library and the lab are used from src/ and lab/src/ via PYTHONPATH. Each step has its own timeout and the
# script goes on after a failure, so one slow step cannot hide the others' results.
# Everything lands in $OUT: env.txt, summary.txt, *.log, *.md tables, *.json.
set -u
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/lab/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error  # the bundled MiniLM for the skip benchmark; no hub
PY=${PYTHON:-python}
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

step() {  # step NAME TIMEOUT_S CMD... : stdout -> NAME.md, stderr -> NAME.log
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.md" 2> "$OUT/$name.log"
  local rc=$?
  echo "$name rc=$rc ${SECONDS}s total, $((SECONDS - t0))s step" | tee -a "$SUMMARY"
}

{ nvidia-smi; "$PY" -c "import torch, triton, transformers, platform; print(platform.python_version(), torch.__version__, torch.version.cuda, 'triton', triton.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"; git log --oneline -1; } > "$OUT/env.txt" 2>&1

# 1. Correctness: Triton path vs reference (62 interpreter cases + 5 GPU sizes), dc
#    determinism, saved tensors, torch.compile(fullgraph=True) vs eager, autocast.
step kernel_check 100 "$PY" -m vectorgate_lab.bench.kernel_check "$OUT/kernel_check.json"

# 2. Op level, BASELINES.md shapes in bf16, then fp32 at 32768x1024.
step bench_op_bf16 100 "$PY" benchmarks/bench.py --device cuda --what op --out "$OUT/bench_op_bf16.json"
step bench_op_fp32 40 "$PY" benchmarks/bench.py --device cuda --what op --dtype float32 --shapes 32768x1024 --out "$OUT/bench_op_fp32.json"

# 3. Where the time goes at the target shape: per-kernel time vs copy bandwidth.
step profile 40 "$PY" -m vectorgate_lab.bench.kernel_profile 32768 1024 bfloat16

# 4. BERT-base training step (batch 32x256, bf16 autocast): eager first (always fits), then
#    eager + compiled (compiles three models).
step bench_model_eager 60 "$PY" benchmarks/bench.py --device cuda --what model --model-size base --no-compile --out "$OUT/bench_model_eager.json"
step bench_model_all 170 "$PY" benchmarks/bench.py --device cuda --what model --model-size base --out "$OUT/bench_model_all.json"

# 5. Token skipping (vectorgate.skip) at inference: dense vs skipping 30/50/70% of MLP tokens.
step skip_speed 60 "$PY" benchmarks/skip_speed.py --device cuda --models minilm vit_s --batch-size 64 --output "$OUT/skip_speed.json"

cat "$SUMMARY"
