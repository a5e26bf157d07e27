"""vectorgate: per-dimension exponential gating for residual connections.

    s = c * tanh(g(x)),  alpha = exp(s),  beta = exp(-s),  y = alpha * x + beta * f(x)
"""

from typing import Any

from vectorgate import distributed, presets, recorder, skip, stability, variants
from vectorgate._version import __version__
from vectorgate.base import ResidualGate
from vectorgate.discovery import count_parameters, gates
from vectorgate.functional import exp_gated_residual, gated_residual
from vectorgate.gate import GateOutput, VectorGate
from vectorgate.patching import (
    GateConfig,
    gate_config,
    is_patched,
    load_gates,
    make_gate_adapter,
    mark_only_gates_trainable,
    param_groups,
    patch,
    reset_gates,
    save_gates,
    stack_gate_projections,
    unpatch,
)
from vectorgate.recorder import GateRecorder, GateStats
from vectorgate.residual import GatedResidual
from vectorgate.skip import SkipBudget, calibrate_skipping, disable_skipping, enable_skipping
from vectorgate.stability import NonFiniteError, UnstableGateWarning, check_gates

# Names that need an optional dependency, imported on first access.
_LAZY = {
    "GatedBertOutput": "vectorgate.integrations.transformers",
    "GatedBertSelfOutput": "vectorgate.integrations.transformers",
    "write_report": "vectorgate.integrations.transformers.report",
}
#: Modules renamed in 0.3 (they shadowed the standard library's ``inspect`` and ``io``).
_MOVED = {"inspect": "vectorgate.recorder", "io": "vectorgate.patching.files"}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _MOVED:
        import warnings

        warnings.warn(f"vectorgate.{name} is now {_MOVED[name]} (see docs/migration.md)", DeprecationWarning, stacklevel=2)
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'vectorgate' has no attribute {name!r}")


__all__ = [
    "GateConfig",
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
    "count_parameters",
    "disable_skipping",
    "distributed",
    "enable_skipping",
    "exp_gated_residual",
    "gate_config",
    "gated_residual",
    "gates",
    "is_patched",
    "load_gates",
    "make_gate_adapter",
    "mark_only_gates_trainable",
    "param_groups",
    "patch",
    "presets",
    "recorder",
    "reset_gates",
    "save_gates",
    "skip",
    "stability",
    "stack_gate_projections",
    "unpatch",
    "variants",
    "write_report",
]
