"""Pure-PyTorch reference of the exponential gated residual, forward and backward.

    s = c * tanh(z),   y = exp(s) * x + exp(-s) * f_x

Everything is computed in float32 (float64 when any input is float64), whatever the
input dtypes, because exp() of a bf16/fp16 argument loses too much. The backward
recomputes tanh and exp from the op's inputs instead of saving them:

    t  = tanh(z),  a = exp(c * t),  b = 1 / a
    dx = dy * a              (the direct part; the projection's share flows through z)
    df = dy * b
    ds = dy * (a * x - b * f_x)
    dz = ds * c * (1 - t^2)
    dc = sum over all leading dims of ds * t     (accumulated in the compute dtype)

With ``delta=True`` the op returns ``y - x`` computed as ``expm1(s) * x + exp(-s) * f_x``:
for sites where the host model adds x itself (``x + delta``), so that at c = 0 the
result is bit-for-bit ``x + f_x``. Its backward differs only in dx = dy * expm1(s).
"""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def output_dtype(x: Tensor, f_x: Tensor) -> torch.dtype:
    """The dtype of y: what ``exp(s) * x + exp(-s) * f_x`` would give in eager PyTorch."""
    return torch.promote_types(x.dtype, f_x.dtype)


def exp_gated_residual_forward(
    x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool = False
) -> Tensor:
    """y = exp(c * tanh(z)) * x + exp(-c * tanh(z)) * f_x (minus x when ``delta``), contiguous.

    Shapes: x, f_x, z: (..., d); c: (d,) or (1,). y: (..., d) in ``output_dtype(x, f_x)``.
    """
    acc = compute_dtype(x, f_x, z, c)
    s = c.to(acc) * torch.tanh(z.to(acc))
    alpha = torch.expm1(s) if delta else torch.exp(s)
    y = alpha * x.to(acc) + torch.exp(-s) * f_x.to(acc)
    return y.to(output_dtype(x, f_x)).contiguous()


def exp_gated_residual_backward(
    grad_y: Tensor, x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients (dx, df_x, dz, dc), each in its input's dtype and shape, contiguous."""
    acc = compute_dtype(grad_y, x, f_x, z, c)
    dy = grad_y.to(acc)
    c_acc = c.to(acc)
    t = torch.tanh(z.to(acc))
    a = torch.exp(c_acc * t)
    b = torch.exp(-c_acc * t)
    dx = dy * (torch.expm1(c_acc * t) if delta else a)
    df = dy * b
    ds = dy * (a * x.to(acc) - b * f_x.to(acc))
    dz = ds * c_acc * (1.0 - t * t)
    dc = (ds * t).reshape(-1, ds.shape[-1]).sum(0)
    if c.shape[0] == 1:
        dc = dc.sum().reshape(1)
    return (
        dx.to(x.dtype).contiguous(),
        df.to(f_x.dtype).contiguous(),
        dz.to(z.dtype).contiguous(),
        dc.to(c.dtype),
    )
