"""vectorgate: per-dimension exponential gating for residual connections.

    s = c * tanh(g(x)),  alpha = exp(s),  beta = exp(-s),  y = alpha * x + beta * f(x)

The top level holds what the README's path uses: the gate and its residual, gating a model
(:func:`patch` and its gate files and optimizer groups) and reading what the gates learned.
The rest lives in subpackages, one concern each:

- :mod:`vectorgate.patching`: everything about patched models (:class:`GateConfig`, sites,
  stacking, gate-only adaptation, the family registry);
- :mod:`vectorgate.skip`: token skipping; :mod:`vectorgate.variants`: the residual peers;
- :mod:`vectorgate.recorder`, :mod:`vectorgate.stability`, :mod:`vectorgate.compound_gain`,
  :mod:`vectorgate.plotting`: what the gates learned and whether they are healthy;
- :mod:`vectorgate.integrations`: transformers, timm, accelerate.
"""

from typing import Any

from vectorgate._version import __version__
from vectorgate.discovery import gates
from vectorgate.functional import gated_residual
from vectorgate.gate import GateOutput, VectorGate
from vectorgate.patching import (
    GateConfig,
    load_gates,
    make_gate_adapter,
    mark_only_gates_trainable,
    param_groups,
    patch,
    save_gates,
    unpatch,
)
from vectorgate.recorder import GateRecorder
from vectorgate.residual import GatedResidual
from vectorgate.stability import check_gates

# Names that need an optional dependency, imported on first access.
_LAZY = {
    "GatedBertOutput": "vectorgate.integrations.transformers",
    "write_report": "vectorgate.integrations.transformers.report",
}
#: Names that left the top level in 0.6 -> the module that holds them now. They still
#: resolve here, with a DeprecationWarning naming the new place (see docs/migration.md).
_MOVED_NAMES = {
    "GateStats": "vectorgate.recorder",
    "GatedBertSelfOutput": "vectorgate.integrations.transformers",
    "NonFiniteError": "vectorgate.stability",
    "UnstableGateWarning": "vectorgate.stability",
    "ResidualGate": "vectorgate.base",
    "SkipBudget": "vectorgate.skip",
    "calibrate_skipping": "vectorgate.skip",
    "disable_skipping": "vectorgate.skip",
    "enable_skipping": "vectorgate.skip",
    "count_parameters": "vectorgate.discovery",
    "exp_gated_residual": "vectorgate.functional",
    "gate_config": "vectorgate.patching",
    "is_patched": "vectorgate.patching",
    "reset_gates": "vectorgate.patching",
    "stack_gate_projections": "vectorgate.patching",
}
#: Modules that left the library for the repository's lab in 0.6 -> where they are now.
_LAB_MODULES = {
    "vectorgate.assets": "vectorgate_lab.assets",
    "vectorgate.bench": "vectorgate_lab.bench",
    "vectorgate.compare": "vectorgate_lab.compare",
    "vectorgate.variants.hyper": "vectorgate_lab.peers",
}
#: Modules renamed in 0.3 (they shadowed the standard library's ``inspect`` and ``io``).
_MOVED_MODULES = {"inspect": "vectorgate.recorder", "io": "vectorgate.patching.files"}
#: Subpackages reachable as attributes after ``import vectorgate`` (imported on first access).
_SUBMODULES = frozenset({
    "base", "compound_gain", "depth", "discovery", "distributed", "functional", "integrations", "patching",
    "plotting", "presets", "recorder", "skip", "stability", "variants",
})


def __getattr__(name: str) -> Any:
    import importlib
    import warnings

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"vectorgate.{name}")
    if name in _MOVED_NAMES:
        warnings.warn(f"vectorgate.{name} is now {_MOVED_NAMES[name]}.{name} (moved in 0.6, see docs/migration.md)",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED_NAMES[name]), name)
    if name in _MOVED_MODULES:
        warnings.warn(f"vectorgate.{name} is now {_MOVED_MODULES[name]} (see docs/migration.md)",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(_MOVED_MODULES[name])
    raise AttributeError(f"module 'vectorgate' has no attribute {name!r}")


class _MovedToLab:
    """Import finder (last in ``sys.meta_path``, so asked only when no module was found) that
    turns ``import vectorgate.compare`` and the like into an error naming the new place."""

    @staticmethod
    def find_spec(fullname: str, path: Any = None, target: Any = None) -> None:
        top = next((m for m in _LAB_MODULES if fullname == m or fullname.startswith(m + ".")), None)
        if top is not None:
            raise ModuleNotFoundError(
                f"{fullname} left the library in 0.6: it is {_LAB_MODULES[top]}{fullname[len(top):]} in the "
                "repository's lab (`pip install -e lab`; see docs/migration.md)", name=fullname)


def _install_lab_finder() -> None:
    import sys

    if not any(isinstance(f, _MovedToLab) for f in sys.meta_path):
        sys.meta_path.append(_MovedToLab())


_install_lab_finder()


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


__all__ = [
    "GateConfig",
    "GateOutput",
    "GateRecorder",
    "GatedBertOutput",
    "GatedResidual",
    "VectorGate",
    "__version__",
    "check_gates",
    "gated_residual",
    "gates",
    "load_gates",
    "make_gate_adapter",
    "mark_only_gates_trainable",
    "param_groups",
    "patch",
    "save_gates",
    "unpatch",
    "write_report",
]
