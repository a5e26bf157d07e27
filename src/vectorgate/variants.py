"""Residual variants behind one interface (:class:`vectorgate.base.ResidualGate`).

``build_gate(name, dim, **kwargs)`` builds any registered variant by name, so a block,
a ``patch()`` target or an example can swap them with a string.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vectorgate.base import ResidualGate
from vectorgate.gate import VectorGate

__all__ = ["VARIANTS", "build_gate", "register_variant"]

VARIANTS: dict[str, Callable[..., ResidualGate]] = {
    "vectorgate": VectorGate,
}


def register_variant(name: str, factory: Callable[..., ResidualGate]) -> None:
    """Make ``factory(dim, **kwargs)`` available as ``build_gate(name, ...)``."""
    if name in VARIANTS:
        raise ValueError(f"variant {name!r} is already registered")
    VARIANTS[name] = factory


def build_gate(name: str, dim: int, **kwargs: Any) -> ResidualGate:
    """Build the residual variant ``name`` for feature dimension ``dim``."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; available: {', '.join(sorted(VARIANTS))}")
    return VARIANTS[name](dim, **kwargs)
