"""Gate the residual connections of an existing model in place: :func:`patch` and its helpers.

One concern a module:

- :mod:`~vectorgate.patching.config`: :class:`GateConfig`, what to gate and how.
- :mod:`~vectorgate.patching.core`: :func:`patch`, :func:`unpatch`, :class:`PatchState`.
- :mod:`~vectorgate.patching.changes`: the reversible edits integrations are made of.
- :mod:`~vectorgate.patching.gate_site`: :class:`GateSite`, one gated residual: its gate, what the
  gate reads and where its pre-activation comes from (stacked GEMM, skip decision).
- :mod:`~vectorgate.patching.state`: :class:`ModelState`, what vectorgate did to a model, as
  a stack of edit groups (patch, stack, skip).
- :mod:`~vectorgate.patching.families`: the family registry and integration loading.
- :mod:`~vectorgate.patching.files`: :func:`save_gates` / :func:`load_gates`.
- :mod:`~vectorgate.patching.stacking`: :func:`stack_gate_projections`, one GEMM for a
  gate's projection and the branch's first projection.
- :mod:`~vectorgate.patching.training`: optimizer groups, gate-only adaptation, re-init.
"""

from vectorgate.discovery import count_parameters, gate_parameter_names, gates
from vectorgate.patching.changes import (
    AddModule,
    Change,
    GateBranchOutput,
    ReplaceModule,
    SetAttribute,
)
from vectorgate.patching.config import GateConfig
from vectorgate.patching.core import (
    PatchState,
    gate_config,
    is_patched,
    patch,
    patch_state,
    unpatch,
)
from vectorgate.patching.families import (
    FAMILIES,
    Family,
    describe_families,
    find_family,
    load_integrations,
    register_family,
    register_integration,
)
from vectorgate.patching.files import load_gates, read_gate_config, save_gates
from vectorgate.patching.gate_site import GateSite
from vectorgate.patching.stacking import stack_gate_projections
from vectorgate.patching.state import EditGroup, ModelState, model_state
from vectorgate.patching.training import (
    make_gate_adapter,
    mark_only_gates_trainable,
    matches_module,
    param_groups,
    reset_gates,
)

__all__ = [
    "FAMILIES",
    "AddModule",
    "Change",
    "EditGroup",
    "Family",
    "GateBranchOutput",
    "GateConfig",
    "GateSite",
    "ModelState",
    "PatchState",
    "ReplaceModule",
    "SetAttribute",
    "count_parameters",
    "describe_families",
    "find_family",
    "gate_config",
    "gate_parameter_names",
    "gates",
    "is_patched",
    "load_gates",
    "load_integrations",
    "make_gate_adapter",
    "mark_only_gates_trainable",
    "matches_module",
    "model_state",
    "param_groups",
    "patch",
    "patch_state",
    "read_gate_config",
    "register_family",
    "register_integration",
    "reset_gates",
    "save_gates",
    "stack_gate_projections",
    "unpatch",
]
