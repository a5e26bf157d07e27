"""Functional forms of the gated residual.

- :func:`gated_residual` combines a residual with gates the caller already has.
- :func:`exp_gated_residual` computes the gated residual straight from the gate's
  pre-activation ``z = g(x)`` and curvature ``c``, without materialising alpha and beta.
  Under ``torch.compile`` it is a ``torch.library`` custom op with a hand-written backward,
  traced as one node (``fullgraph=True`` works); in eager mode the same forward/backward run
  through a plain ``autograd.Function``, which costs less per call. Either way a kernel
  chosen by :mod:`vectorgate.kernels.dispatch` does the work. On the CPU it keeps exp(s) for backward
  (one tensor of x's size beyond its inputs); the GPU kernels keep only the inputs and
  recompute.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vectorgate._checks import (
    check_broadcasts_to,
    check_curvature,
    check_floating,
    check_same_device,
    check_same_shape,
)
from vectorgate.kernels import dispatch, reference

__all__ = ["exp_gated_residual", "gated_residual"]


def gated_residual(x: Tensor, f_x: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """The gated residual ``alpha * x + beta * f_x``.

    Args:
        x: residual input, shape ``(..., d)``.
        f_x: branch output, the same shape as ``x`` (never broadcast).
        alpha: gate on the residual, broadcastable to ``x.shape`` (usually the same shape).
        beta: gate on the branch, broadcastable to ``x.shape``.

    Returns:
        ``y`` with the shape of ``x``.
    """
    for name, t in (("x", x), ("f_x", f_x), ("alpha", alpha), ("beta", beta)):
        check_floating(name, t)
    check_same_shape("x", x, "f_x", f_x)
    check_broadcasts_to("alpha", alpha, x.shape)
    check_broadcasts_to("beta", beta, x.shape)
    check_same_device(x=x, f_x=f_x, alpha=alpha, beta=beta)
    return alpha * x + beta * f_x


@torch.library.custom_op("vectorgate::exp_gated_residual", mutates_args=())
def _exp_gated_residual_op(x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool) -> tuple[Tensor, Tensor]:
    # (y, a): a = exp(s) when the backend keeps it for backward, else an empty tensor.
    return dispatch.forward(x, f_x, z, c, delta)


@_exp_gated_residual_op.register_fake
def _(x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool) -> tuple[Tensor, Tensor]:
    y = x.new_empty(x.shape, dtype=reference.output_dtype(x, f_x))
    if dispatch.saves_activations(dispatch.backend(x, f_x, z, c)):
        return y, x.new_empty(x.shape, dtype=reference.compute_dtype(x, f_x, z, c))
    return y, y.new_empty(0)


@torch.library.custom_op("vectorgate::exp_gated_residual_backward", mutates_args=())
def _exp_gated_residual_backward_op(
    grad_y: Tensor, x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, a: Tensor, delta: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return dispatch.backward(grad_y, x, f_x, z, c, a, delta)


@_exp_gated_residual_backward_op.register_fake
def _(
    grad_y: Tensor, x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, a: Tensor, delta: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return (
        x.new_empty(x.shape),
        f_x.new_empty(f_x.shape),
        z.new_empty(z.shape),
        c.new_empty(c.shape),
    )


def _setup_context(ctx, inputs, output) -> None:
    # The op's inputs, plus exp(s) where the backend returned it (CPU): at most one tensor
    # of x's size beyond the inputs. Nothing else of x's size is kept.
    x, f_x, z, c, delta = inputs
    _, a = output
    ctx.mark_non_differentiable(a)
    ctx.save_for_backward(x, f_x, z, c, a)
    ctx.delta = delta


def _needed(ctx, grads: tuple[Tensor, ...]) -> tuple[Tensor | None, ...]:
    """(dx, df_x, dz, dc) where autograd asked for them, then None for ``delta``."""
    return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:4], strict=True)), None)


def _backward(ctx, grad_y: Tensor, _grad_a: Tensor | None):
    x, f_x, z, c, a = ctx.saved_tensors
    return _needed(ctx, _exp_gated_residual_backward_op(grad_y, x, f_x, z, c, a, ctx.delta))


_exp_gated_residual_op.register_autograd(_backward, setup_context=_setup_context)


class _ExpGatedResidual(torch.autograd.Function):
    """The same forward/backward as the custom op, for eager mode.

    A ``torch.library`` custom op costs about 0.1 ms of Python per call (schema checks,
    dispatch, its autograd wrapper) in forward and again in backward: more than the whole
    elementwise work of a 64 x 64 gate on a CPU, and per gate per step on a GPU. Eager calls
    take this plain autograd.Function; under ``torch.compile`` the custom op is traced as one
    node (see :func:`exp_gated_residual`). Both run :mod:`vectorgate.kernels.dispatch`.
    """

    @staticmethod
    def forward(ctx, x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool) -> Tensor:
        y, a = dispatch.forward(x, f_x, z, c, delta)
        ctx.save_for_backward(x, f_x, z, c, a)  # a: exp(s) on the CPU, else empty
        ctx.delta = delta
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, f_x, z, c, a = ctx.saved_tensors
        return _needed(ctx, dispatch.backward(grad_y, x, f_x, z, c, a, ctx.delta))


def exp_gated_residual(
    x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, *, delta: bool = False
) -> Tensor:
    """``y = exp(s) * x + exp(-s) * f_x`` with ``s = c * tanh(z)``, fused.

    Computes in float32 (float64 for float64 inputs) whatever the input dtypes and
    returns ``y`` in ``torch.promote_types(x.dtype, f_x.dtype)``.

    Args:
        x: residual input, shape ``(..., d)``.
        f_x: branch output, same shape as ``x``.
        z: the gate's pre-activation ``g(x)``, same shape as ``x``.
        c: curvature, shape ``(d,)`` (per dimension) or ``(1,)`` (one shared bound).
        delta: if True, return ``y - x`` computed as ``expm1(s) * x + exp(-s) * f_x``.
            For sites where the host model adds x itself (``x + delta``): at c = 0 that
            sum is bit-for-bit ``x + f_x``, which ``x + (y - x)`` would not be.

    Returns:
        ``y`` of shape ``(..., d)``. Gradients flow to all four inputs; the gradient
        of ``c`` is reduced over every leading dimension.
    """
    for name, t in (("x", x), ("f_x", f_x), ("z", z)):
        check_floating(name, t)
    if x.dim() == 0:
        raise ValueError("x must have shape (..., d) with at least one dimension, got a 0-dim tensor")
    check_same_shape("x", x, "f_x", f_x)
    check_same_shape("x", x, "z", z)
    check_curvature(c, x.shape[-1])
    check_same_device(x=x, f_x=f_x, z=z, c=c)
    if torch.compiler.is_compiling():
        return _exp_gated_residual_op(x, f_x, z, c, bool(delta))[0]
    return _ExpGatedResidual.apply(x, f_x, z, c, bool(delta))
