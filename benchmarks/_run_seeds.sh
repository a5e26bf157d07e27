# Sourced by the comparison scripts in benchmarks/. Needs VG (the `vectorgate-lab` command) and EXTRA
# (an array of arguments added to every `vectorgate-lab compare`).

run_seeds() {  # run_seeds OUT SHARD NSEEDS TASK -- ARMS...: seeds 0..NSEEDS-1, one at a time (paired if stopped)
  local out=$1 shard=$2 n=$3 task=$4; shift 5
  for ((k = 1; k <= n; k++)); do
    "$VG" compare --shard "$shard" --tasks "$task" --variants "$@" --seeds "$k" --output-dir "$out" \
      --threads 1 --no-progress "${EXTRA[@]}"
  done
}
