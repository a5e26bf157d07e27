"""The default CPU path: eager PyTorch ops that keep exp(s) for backward instead of recomputing.

On a CPU the transcendental functions, not memory traffic, dominate the op: recomputing
tanh(z), exp(s) and exp(-s) in backward (as :mod:`vectorgate.kernels.reference` does) made
the eager op 1.9x slower than the naive formula. This path keeps one float32 tensor of x's
size beyond the op's inputs (x, f_x, z, c):

    a = exp(s),  s = c * tanh(z)

so backward recomputes only t = tanh(z) (one transcendental instead of three; exp(-s) = 1/a):

    dx = dy * a                 (dy * (a - 1) with ``delta``)
    df = dy / a
    ds = (dy * a) * x - (dy / a) * f_x
    dc = sum over rows of ds * t
    dz = c * ds * (1 - t^2)     (aten.tanh_backward)

Few passes, in-place where the buffer is ours (``mul_``, ``addcdiv_``, ``addcmul_``), and
mixed-dtype elementwise ops read bf16/fp16 inputs straight into float32 arithmetic, so no
``.to(float32)`` copies of x, f_x or dy are made. Inputs of any strides are accepted; y and
the gradients come back contiguous. The math matches the reference to float32 rounding, and
at c = 0 it is exact: a = 1, so y = x + f_x and ``delta`` gives x * 1 - x + f_x = f_x.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vectorgate.kernels.reference import compute_dtype, output_dtype

__all__ = ["backward", "forward"]


def _tanh(z: Tensor, acc: torch.dtype) -> Tensor:
    """tanh(z) in ``acc``, a new tensor. A bf16 z is widened first (tanh would round to bf16)."""
    return torch.tanh(z) if z.dtype == acc else z.to(acc).tanh_()


def forward(x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool) -> tuple[Tensor, Tensor]:
    """(y, a) with y as in the reference and a = exp(c * tanh(z)) for backward.

    Shapes: x, f_x, z: (..., d); c: (d,) or (1,). y: (..., d) in ``output_dtype(x, f_x)``,
    contiguous; a: (..., d) in the compute dtype (float32, float64 for float64 inputs).
    """
    acc = compute_dtype(x, f_x, z, c)
    # tanh of a bf16 z would round t to bf16: widen first, then work in place.
    a = _tanh(z, acc).mul_(c).exp_()
    y = torch.mul(a, x)
    if delta:
        # a * x - x rather than expm1(s) * x: exact 0 at c = 0 (a == 1), which is what the
        # delta form promises, and off by float32 rounding of a * x elsewhere.
        y.sub_(x)
    y.addcdiv_(f_x, a)  # + exp(-s) * f_x, as f_x / exp(s)
    return y.to(output_dtype(x, f_x)).contiguous(), a


def backward(
    grad_y: Tensor, x: Tensor, f_x: Tensor, z: Tensor, a: Tensor, c: Tensor, delta: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, df_x, dz, dc), with ``a`` as :func:`forward` returned it.

    Shapes: grad_y, x, f_x, z, a: (..., d); c: (d,) or (1,). Each gradient has its input's
    shape and dtype, contiguous.
    """
    t = _tanh(z, a.dtype)
    dxa = torch.mul(grad_y, a)  # dy * exp(s), in the compute dtype
    dfa = torch.div(grad_y, a)  # dy * exp(-s)
    ds = torch.mul(dxa, x).addcmul_(dfa, f_x, value=-1)
    dc = torch.mul(ds, t).reshape(-1, ds.shape[-1]).sum(0)
    if c.shape[0] == 1:
        dc = dc.sum().reshape(1)
    dz = torch.ops.aten.tanh_backward(ds.mul_(c), t)  # c * ds * (1 - t^2)
    if delta:
        dxa.sub_(grad_y)  # dy * (exp(s) - 1)
    return (
        dxa.to(x.dtype).contiguous(),
        dfa.to(f_x.dtype).contiguous(),
        dz.to(z.dtype).contiguous(),
        dc.to(c.dtype),
    )
