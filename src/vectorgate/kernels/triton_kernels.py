"""Triton kernels for the exponential gated residual, forward and backward.

    s = c * tanh(z),   y = exp(s) * x + exp(-s) * f_x      (delta: expm1(s) * x + exp(-s) * f_x)

The math is the one in :mod:`vectorgate.kernels.reference` (the ground truth these kernels
are tested against). Every input is loaded in its own dtype (fp32, bf16 or fp16, mixed
freely, as under autocast) and computed in fp32; outputs are stored in the dtype of the
matching input (y in ``promote_types(x.dtype, f_x.dtype)``).

Layout: inputs are made contiguous and viewed as ``(N, d)``; a 2-D grid of programs covers
row blocks x column blocks, with masking for any ``d`` (1, 7, 383, 4097, ...). The backward
saves nothing: it recomputes tanh/exp from the op's inputs. ``dc`` is reduced without
atomics, deterministically: each row program accumulates its rows in fp32 and writes one
partial row to a ``(P, d)`` buffer, which torch then sums in a fixed order.

Importing this module imports triton; :mod:`vectorgate.kernels.dispatch` imports it only
when a CUDA tensor arrives. Set ``TRITON_INTERPRET=1`` *before* importing it to run the
kernels on CPU tensors (how the tests cover them without a GPU).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from vectorgate.kernels.reference import output_dtype

__all__ = ["SUPPORTED_DTYPES", "backward", "forward"]

#: Input dtypes the kernels load; anything else (float64, ...) goes to the reference.
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Elements per program: big enough to keep HBM busy, small enough for the registers.
_TILE = 4096
_MAX_BLOCK_N = 512


@triton.jit
def _tanh(z):
    # libdevice is not available under TRITON_INTERPRET, so tanh is built from exp. The
    # odd Taylor series below |z| < 0.1 avoids the cancellation in 1 - exp(-2|z|) near 0
    # (truncation error < 3e-10 relative there).
    az = tl.abs(z)
    e = tl.exp(-2.0 * az)
    big = (1.0 - e) / (1.0 + e)
    z2 = z * z
    small = az * (1.0 + z2 * (-0.3333333333333333 + z2 * (0.13333333333333333 + z2 * -0.05396825396825397)))
    t = tl.where(az < 0.1, small, big)
    return tl.where(z < 0.0, -t, t)


@triton.jit
def _expm1(s):
    # exp(s) - 1 cancels near 0; a Taylor series there (error < 2e-10 relative at |s| 0.1).
    # At s == 0 both branches give exactly 0, which the delta form's bit-exactness needs.
    p = s * (1.0 + s * (0.5 + s * (0.16666666666666666 + s * (0.041666666666666664
        + s * (0.008333333333333333 + s * 0.001388888888888889)))))
    return tl.where(tl.abs(s) < 0.1, p, tl.exp(s) - 1.0)


@triton.jit
def _load_c(c_ptr, cols, cmask, C_SCALAR: tl.constexpr):
    if C_SCALAR:
        c = tl.load(c_ptr).to(tl.float32)
    else:
        c = tl.load(c_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    return c


@triton.jit
def _forward_kernel(
    x_ptr, f_ptr, z_ptr, c_ptr, y_ptr,
    n_rows, d,
    C_SCALAR: tl.constexpr, DELTA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < d
    mask = (rows < n_rows)[:, None] & cmask[None, :]
    offs = rows.to(tl.int64)[:, None] * d + cols[None, :]
    c = _load_c(c_ptr, cols, cmask, C_SCALAR)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    f = tl.load(f_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s = c * _tanh(z)
    if DELTA:
        a = _expm1(s)
    else:
        a = tl.exp(s)
    y = a * x + tl.exp(-s) * f
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(
    dy_ptr, x_ptr, f_ptr, z_ptr, c_ptr,
    dx_ptr, df_ptr, dz_ptr, dc_part_ptr,
    n_rows, d, n_row_blocks, n_row_programs,
    C_SCALAR: tl.constexpr, DELTA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < d
    c = _load_c(c_ptr, cols, cmask, C_SCALAR)
    dc_acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # Grid-stride over row blocks: a bounded number of programs, so the dc partial buffer
    # stays small and its final sum cheap. Masked lanes load zeros and add 0 to dc.
    for blk in range(pid_m, n_row_blocks, n_row_programs):
        rows = blk * BLOCK_M + tl.arange(0, BLOCK_M)
        mask = (rows < n_rows)[:, None] & cmask[None, :]
        offs = rows.to(tl.int64)[:, None] * d + cols[None, :]
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        f = tl.load(f_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        t = _tanh(z)
        s = c * t
        a = tl.exp(s)
        b = tl.exp(-s)
        if DELTA:
            dx = dy * _expm1(s)
        else:
            dx = dy * a
        ds = dy * (a * x - b * f)
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        tl.store(df_ptr + offs, (dy * b).to(df_ptr.dtype.element_ty), mask=mask)
        tl.store(dz_ptr + offs, (ds * c * (1.0 - t * t)).to(dz_ptr.dtype.element_ty), mask=mask)
        dc_acc += ds * t
    tl.store(dc_part_ptr + pid_m * d + cols, tl.sum(dc_acc, axis=0), mask=cmask)


def _blocks(d: int) -> tuple[int, int]:
    block_n = min(triton.next_power_of_2(d), _MAX_BLOCK_N)
    return max(1, _TILE // block_n), block_n


def _num_warps(block_m: int, block_n: int) -> int:
    return 8 if block_m * block_n >= 4096 else 4


def _max_row_programs(device: torch.device) -> int:
    # Enough programs to fill the GPU a few times over; on the CPU (interpreter) fewer,
    # bigger programs are faster.
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 8


def _as_rows(t: Tensor, d: int) -> Tensor:
    # Non-contiguous inputs (transposes, slices) are copied once here; the kernels then
    # index a dense (N, d) layout.
    return t.contiguous().view(-1, d)


def _check(*tensors: Tensor) -> None:
    for t in tensors:
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                f"the Triton gate kernels take float32, bfloat16 or float16, got {t.dtype}; "
                "vectorgate.kernels.dispatch routes other dtypes to the PyTorch reference"
            )


def _device_guard(t: Tensor) -> contextlib.AbstractContextManager:
    # Launch on the tensor's GPU, not the current one; nothing to guard for CPU tensors
    # (the interpreter).
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def forward(x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool) -> Tensor:
    """Fused forward. Shapes: x, f_x, z: (..., d); c: (d,) or (1,). Returns y: (..., d), contiguous."""
    _check(x, f_x, z, c)
    d = x.shape[-1]
    y = torch.empty(x.shape, dtype=output_dtype(x, f_x), device=x.device)
    n_rows = x.numel() // d if d else 0
    if y.numel() == 0:
        return y
    block_m, block_n = _blocks(d)
    grid = (triton.cdiv(n_rows, block_m), triton.cdiv(d, block_n))
    with _device_guard(x):
        _forward_kernel[grid](
            _as_rows(x, d), _as_rows(f_x, d), _as_rows(z, d), c.contiguous(), y.view(-1, d),
            n_rows, d,
            C_SCALAR=c.numel() == 1 and d != 1, DELTA=bool(delta), BLOCK_M=block_m, BLOCK_N=block_n,
            num_warps=_num_warps(block_m, block_n),
        )
    return y


def backward(
    grad_y: Tensor, x: Tensor, f_x: Tensor, z: Tensor, c: Tensor, delta: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fused backward: (dx, df_x, dz, dc), each in its input's dtype and shape, contiguous.

    dx is the direct part only (dy * exp(s), or dy * expm1(s) with ``delta``); the share
    that flows through z = g(x) is autograd's, via dz. dc (shape of c) is reduced over all
    leading dimensions in fp32, in a fixed order.
    """
    _check(grad_y, x, f_x, z, c)
    d = x.shape[-1]
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    df = torch.empty(f_x.shape, dtype=f_x.dtype, device=x.device)
    dz = torch.empty(z.shape, dtype=z.dtype, device=x.device)
    n_rows = x.numel() // d if d else 0
    if x.numel() == 0:
        return dx, df, dz, torch.zeros_like(c)
    block_m, block_n = _blocks(d)
    n_row_blocks = triton.cdiv(n_rows, block_m)
    n_row_programs = min(n_row_blocks, _max_row_programs(x.device))
    partial = torch.empty((n_row_programs, d), dtype=torch.float32, device=x.device)
    grid = (n_row_programs, triton.cdiv(d, block_n))
    with _device_guard(x):
        _backward_kernel[grid](
            _as_rows(grad_y, d), _as_rows(x, d), _as_rows(f_x, d), _as_rows(z, d), c.contiguous(),
            dx.view(-1, d), df.view(-1, d), dz.view(-1, d), partial,
            n_rows, d, n_row_blocks, n_row_programs,
            C_SCALAR=c.numel() == 1 and d != 1, DELTA=bool(delta), BLOCK_M=block_m, BLOCK_N=block_n,
            num_warps=_num_warps(block_m, block_n),
        )
    dc = partial.sum(0)
    if c.numel() == 1:
        dc = dc.sum().reshape(1)
    return dx, df, dz, dc.to(c.dtype)
