"""The gate as users write it by hand, the baseline every benchmark compares against."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from vectorgate.gate import VectorGate
from vectorgate.variants import VARIANTS, register_variant

#: Variant name under which :class:`NaiveVectorGate` is registered for ``patch(variant=...)``.
NAIVE_VARIANT = "vectorgate_naive"


def naive_gated_residual(x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool = False) -> Tensor:
    """``exp(s) * x + exp(-s) * f_x`` with ``s = c * tanh(z)`` in plain eager ops.

    Autograd saves tanh(z), exp(s) and exp(-s): three tensors of x's size beyond x and f_x.
    Shapes: x, f_x, z: (..., d); c: (d,) or (1,).
    """
    s = c * torch.tanh(z)
    alpha = torch.expm1(s) if delta else torch.exp(s)
    return alpha * x + torch.exp(-s) * f_x


class NaiveVectorGate(VectorGate):
    """:class:`VectorGate` with the hand-written formula instead of the fused op (same parameters)."""

    def residual(self, x: Tensor, f_x: Tensor, z: Tensor | None = None) -> Tensor:
        z = self.pre_activation(x) if z is None else z
        return naive_gated_residual(x, f_x, z, self.effective_curvature())

    def residual_delta(self, x: Tensor, f_x: Tensor, z: Tensor | None = None) -> Tensor:
        z = self.pre_activation(x) if z is None else z
        return naive_gated_residual(x, f_x, z, self.effective_curvature(), delta=True)


@contextlib.contextmanager
def naive_variant() -> Iterator[str]:
    """Register :class:`NaiveVectorGate` as :data:`NAIVE_VARIANT` for the duration of the
    block (a benchmark baseline, not a variant users should find in the registry)."""
    register_variant(NAIVE_VARIANT, NaiveVectorGate)
    try:
        yield NAIVE_VARIANT
    finally:
        VARIANTS.pop(NAIVE_VARIANT, None)
