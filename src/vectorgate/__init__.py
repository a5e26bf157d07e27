"""vectorgate: per-dimension exponential gating for residual connections.

    s = c * tanh(g(x)),  alpha = exp(s),  beta = exp(-s),  y = alpha * x + beta * f(x)
"""

from typing import Any

from vectorgate import distributed, inspect, skip, stability, variants
from vectorgate.base import ResidualGate
from vectorgate.functional import exp_gated_residual, gated_residual
from vectorgate.gate import GateOutput, VectorGate
from vectorgate.inspect import GateRecorder, GateStats
from vectorgate.io import load_gates, save_gates
from vectorgate.patching import (
    gates,
    is_patched,
    make_gate_adapter,
    mark_only_gates_trainable,
    param_groups,
    patch,
    reset_gates,
    unpatch,
)
from vectorgate.report import write_report
from vectorgate.residual import GatedResidual
from vectorgate.skip import SkipBudget, calibrate_skipping, disable_skipping, enable_skipping
from vectorgate.stability import NonFiniteError, UnstableGateWarning, check_gates

__version__ = "0.2.0"

# Names that need an optional dependency, imported on first access.
_LAZY = {
    "GatedBertOutput": "vectorgate.integrations.transformers",
    "GatedBertSelfOutput": "vectorgate.integrations.transformers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vectorgate' has no attribute {name!r}")


__all__ = [
    "GateOutput",
    "GateRecorder",
    "GateStats",
    "GatedBertOutput",
    "GatedBertSelfOutput",
    "GatedResidual",
    "NonFiniteError",
    "ResidualGate",
    "SkipBudget",
    "UnstableGateWarning",
    "VectorGate",
    "__version__",
    "calibrate_skipping",
    "check_gates",
    "disable_skipping",
    "distributed",
    "enable_skipping",
    "exp_gated_residual",
    "gated_residual",
    "gates",
    "inspect",
    "is_patched",
    "load_gates",
    "make_gate_adapter",
    "mark_only_gates_trainable",
    "param_groups",
    "patch",
    "reset_gates",
    "save_gates",
    "skip",
    "stability",
    "unpatch",
    "variants",
    "write_report",
]
