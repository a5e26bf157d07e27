"""Choose an implementation of the fused op for the inputs at hand.

The rule, decided per call from the tensors (and one debugging switch):

1. ``VECTORGATE_FORCE_REFERENCE=1``: the PyTorch reference, always (for debugging). It saves
   only the op's inputs and recomputes tanh/exp in backward.
2. CUDA tensors, every dtype in fp32/bf16/fp16, triton importable: the Triton kernels
   (:mod:`vectorgate.kernels.triton_kernels`). On a GPU the op is memory-bound, so the
   kernels save only the inputs and recompute tanh/exp in registers.
3. CPU tensors: the eager path of :mod:`vectorgate.kernels.cpu_eager`, the default. On a CPU
   tanh/exp dominate, so it keeps a = exp(s) for backward (one float32 tensor of x's size
   beyond the inputs) and its backward recomputes only tanh(z). It
   needs no compiler and has no first-call cost; measured at 0.4-0.6x the naive formula's
   forward+backward time (docs/benchmarks.md).
4. CPU tensors with ``VECTORGATE_CPU_COMPILE=1``: the reference bodies under
   ``torch.compile`` (:mod:`vectorgate.kernels.cpu_compiled`): one fused C++ loop that saves
   only the inputs. Opt-in, never automatic, because its first call per shape/dtype compiles
   for seconds and it needs a working C++ toolchain; at steady state it runs in about the
   time of the eager path or less, with one tensor of x's size less kept for backward.
5. Anything else (CUDA without triton, float64 on CUDA, other devices): the reference.

Backward follows what forward kept: when forward returned a (the CPU eager path),
backward uses them whatever the environment says by then; otherwise it recomputes with the
implementation the rule picks for the backward call.

:func:`backend` names the choice, so tests and benchmarks can say what they measured.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
from torch import Tensor

from vectorgate.kernels import cpu_eager, reference

__all__ = [
    "backend",
    "backward",
    "cpu_compile_enabled",
    "force_reference",
    "forward",
    "saves_activations",
    "triton_available",
]

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _flag(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


def force_reference() -> bool:
    """True when the environment asks for the PyTorch reference everywhere."""
    return _flag("VECTORGATE_FORCE_REFERENCE")


def cpu_compile_enabled() -> bool:
    """True when ``VECTORGATE_CPU_COMPILE`` asks for the torch.compile'd CPU path."""
    return _flag("VECTORGATE_CPU_COMPILE")


@functools.cache
def triton_available() -> bool:
    """Whether triton can be imported (checked once, without importing it)."""
    return importlib.util.find_spec("triton") is not None


def backend(*tensors: Tensor) -> str:
    """``"triton"``, ``"cpu_eager"``, ``"cpu_compiled"`` or ``"reference"``: the rule above."""
    if force_reference():
        return "reference"
    if all(t.is_cuda for t in tensors):
        if triton_available() and all(t.dtype in _TRITON_DTYPES for t in tensors):
            return "triton"
        return "reference"
    if all(t.device.type == "cpu" for t in tensors):
        return "cpu_compiled" if cpu_compile_enabled() else "cpu_eager"
    return "reference"


def saves_activations(name: str) -> bool:
    """Whether backend ``name`` returns a = exp(s) for backward to reuse."""
    return name == "cpu_eager"


def _impl(name: str):
    # Imported on first use: importing triton costs time and must not happen for CPU users.
    if name == "triton":
        from vectorgate.kernels import triton_kernels

        return triton_kernels.forward, triton_kernels.backward
    if name == "cpu_compiled":
        from vectorgate.kernels import cpu_compiled

        return cpu_compiled.forward, cpu_compiled.backward
    return reference.exp_gated_residual_forward, reference.exp_gated_residual_backward


def forward(x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool) -> tuple[Tensor, Tensor]:
    """(y, a) from the chosen implementation. Shapes as in the reference.

    a is exp(s), shape (..., d) in the compute dtype, when the backend
    :func:`saves_activations`; otherwise empty (shape (0,)) and backward recomputes it.
    """
    name = backend(x, f_x, z, c)
    if saves_activations(name):
        return cpu_eager.forward(x, f_x, z, c, delta)
    y = _impl(name)[0](x, f_x, z, c, delta)
    return y, y.new_empty(0)


def backward(
    grad_y: Tensor, x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, a: Tensor, delta: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, df_x, dz, dc). ``a`` is what :func:`forward` returned (empty: recompute)."""
    if a.shape == x.shape and a.numel() > 0:
        return cpu_eager.backward(grad_y, x, f_x, z, a, c, delta)
    return _impl(backend(grad_y, x, f_x, z, c))[1](grad_y, x, f_x, z, c, delta)
