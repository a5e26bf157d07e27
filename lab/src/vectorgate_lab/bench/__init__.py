"""Benchmarks of the gated residual: ``vectorgate-lab bench`` and ``benchmarks/*.py`` run these.

- :mod:`.ops`: one gate, op level: naive eager, naive under torch.compile and vectorgate's
  fused op; forward and forward+backward time, tensors saved for backward, and the floor
  from a measured copy bandwidth.
- :mod:`.model`: a BERT training step, plain vs naive-gated vs vectorgate-gated, eager and
  compiled; step time and memory as ratios to plain, measured in the same run.
- :mod:`.timing` (timers, bandwidth, saved-tensor accounting), :mod:`.naive` (the
  hand-written formula users write), :mod:`.report` (table, JSON, machine description).
"""

from vectorgate_lab.bench.model import ModelBenchConfig, run_model_bench
from vectorgate_lab.bench.ops import OpBenchConfig, run_op_bench

__all__ = ["ModelBenchConfig", "OpBenchConfig", "run_model_bench", "run_op_bench"]
