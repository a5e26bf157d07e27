"""Choose an implementation of the fused op for the inputs at hand.

Order of choice, decided per call from the tensors and the environment:

1. ``VECTORGATE_FORCE_REFERENCE=1``: the PyTorch reference, always (for debugging).
2. CUDA tensors, every dtype in fp32/bf16/fp16, triton importable: the Triton kernels
   (:mod:`vectorgate.kernels.triton_kernels`).
3. CPU tensors and ``VECTORGATE_CPU_COMPILE=1``: the reference bodies under
   ``torch.compile`` (:mod:`vectorgate.kernels.cpu_compiled`); about 2x faster than the
   eager reference, but the first call per shape/dtype compiles (seconds), so it is opt-in.
4. Anything else: the PyTorch reference (:mod:`vectorgate.kernels.reference`).

:func:`backend` names the choice, so tests and benchmarks can say what they measured.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
from torch import Tensor

from vectorgate.kernels import reference

__all__ = ["backend", "backward", "cpu_compile_enabled", "force_reference", "forward", "triton_available"]

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
    """``"triton"``, ``"cpu_compiled"`` or ``"reference"``: what :func:`forward` would run."""
    if force_reference():
        return "reference"
    if all(t.is_cuda for t in tensors):
        if triton_available() and all(t.dtype in _TRITON_DTYPES for t in tensors):
            return "triton"
        return "reference"
    if cpu_compile_enabled() and all(t.device.type == "cpu" for t in tensors):
        return "cpu_compiled"
    return "reference"


def _impl(name: str):
    # Imported on first use: importing triton costs time and must not happen for CPU users.
    if name == "triton":
        from vectorgate.kernels import triton_kernels

        return triton_kernels.forward, triton_kernels.backward
    if name == "cpu_compiled":
        from vectorgate.kernels import cpu_compiled

        return cpu_compiled.forward, cpu_compiled.backward
    return reference.exp_gated_residual_forward, reference.exp_gated_residual_backward


def forward(x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool) -> Tensor:
    """y (or y - x with ``delta``) from the chosen implementation. Shapes as in the reference."""
    return _impl(backend(x, f_x, z, c))[0](x, f_x, z, c, delta)


def backward(
    grad_y: Tensor, x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, df_x, dz, dc) from the chosen implementation."""
    return _impl(backend(grad_y, x, f_x, z, c))[1](grad_y, x, f_x, z, c, delta)
