"""Choose an implementation of the fused op for the inputs at hand.

Today every input goes to the PyTorch reference. A faster backend (e.g. a Triton
kernel for CUDA) plugs in here; setting ``VECTORGATE_FORCE_REFERENCE=1`` must always
route to the reference, for debugging.
"""

from __future__ import annotations

import os

from torch import Tensor

from vectorgate.kernels import reference


def force_reference() -> bool:
    """True when the environment asks for the PyTorch reference everywhere."""
    return os.environ.get("VECTORGATE_FORCE_REFERENCE", "0") not in ("", "0", "false", "False")


def forward(x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool) -> Tensor:
    return reference.exp_gated_residual_forward(x, f_x, z, c, delta)


def backward(
    grad_y: Tensor, x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return reference.exp_gated_residual_backward(grad_y, x, f_x, z, c, delta)
