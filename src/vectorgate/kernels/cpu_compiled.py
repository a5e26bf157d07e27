"""The reference bodies under ``torch.compile``: a fused path for CPU tensors (opt-in).

Inductor fuses each body into one C++ loop nest, so forward+backward run in about half the
time of the naive eager formula (see docs/benchmarks.md), while the op still saves only its
inputs. The price is the first call per input signature: it compiles (seconds, measured by
``vectorgate-lab bench``), which is why :mod:`vectorgate.kernels.dispatch` uses this path only
when ``VECTORGATE_CPU_COMPILE=1``. Compilation happens on the first call, never at import.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from vectorgate.kernels import reference

__all__ = ["backward", "forward"]


@functools.cache
def _compiled(which: str):
    fn = {
        "forward": reference.exp_gated_residual_forward,
        "backward": reference.exp_gated_residual_backward,
    }[which]
    # dynamic=None: the first shape compiles static, a second shape recompiles once with
    # symbolic sizes, after which new token counts reuse it.
    return torch.compile(fn, fullgraph=True)


def forward(x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool) -> Tensor:
    """Compiled :func:`reference.exp_gated_residual_forward`; same shapes and dtypes."""
    # The op's autograd is hand-written; compiling a training graph here would be waste.
    with torch.no_grad():
        return _compiled("forward")(x, f_x, z, c, delta)


def backward(
    grad_y: Tensor, x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Compiled :func:`reference.exp_gated_residual_backward`; same shapes and dtypes."""
    with torch.no_grad():
        return _compiled("backward")(grad_y, x, f_x, z, c, delta)
