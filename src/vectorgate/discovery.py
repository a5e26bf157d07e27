"""Find the gates of a model and count parameters: the one place every module asks.

:func:`gates` is what :func:`vectorgate.patch`, the optimizer helpers, gate files, the
recorder and the health checks all use, so they agree on which modules are gates and on
their names.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from vectorgate.base import ResidualGate

__all__ = ["count_parameters", "gate_parameter_names", "gates"]


def gates(model: nn.Module, kind: type[nn.Module] = ResidualGate) -> Iterator[tuple[str, ResidualGate]]:
    """Yield ``(qualified name, gate)`` for every gate in ``model``, in module order.

    A gate nested inside another gate (a variant built from a gate) is not yielded: the
    outer one is the gate of its residual site. The name of a gate that *is* ``model`` is
    ``""``, as in ``named_modules()``.

    Args:
        model: any module.
        kind: only yield gates that are instances of this class (e.g. ``VectorGate``).
    """
    outer: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, ResidualGate):
            continue
        if any(name.startswith(p + ".") for p in outer) or ("" in outer and name):
            continue
        outer.append(name)
        if isinstance(module, kind):
            yield name, module


def gate_parameter_names(model: nn.Module) -> dict[str, ResidualGate]:
    """Qualified name of every gate parameter of ``model`` -> the gate that owns it."""
    return {
        f"{name}.{p_name}" if name else p_name: gate
        for name, gate in gates(model)
        for p_name, _ in gate.named_parameters()
    }


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
