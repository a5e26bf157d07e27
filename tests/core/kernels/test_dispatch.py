"""Which implementation the custom op runs, and the CPU paths it can choose."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from vectorgate import VectorGate
from vectorgate.functional import exp_gated_residual
from vectorgate.kernels import dispatch, reference


def _fake(dtype: torch.dtype, cuda: bool) -> SimpleNamespace:
    # backend() only reads these attributes; stand-ins let a CPU machine test the CUDA rule.
    return SimpleNamespace(dtype=dtype, is_cuda=cuda, device=torch.device("cuda" if cuda else "cpu"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("VECTORGATE_FORCE_REFERENCE", raising=False)
    monkeypatch.delenv("VECTORGATE_CPU_COMPILE", raising=False)


@pytest.mark.parametrize(
    "dtype, cuda, triton, force, cpu_compile, expected",
    [
        (torch.float32, False, True, False, False, "cpu_eager"),
        (torch.bfloat16, False, False, False, False, "cpu_eager"),
        (torch.float32, False, True, False, True, "cpu_compiled"),
        (torch.float32, False, True, True, True, "reference"),
        (torch.float32, True, True, False, False, "triton"),
        (torch.bfloat16, True, True, False, False, "triton"),
        (torch.float16, True, True, False, True, "triton"),
        (torch.float64, True, True, False, False, "reference"),
        (torch.float32, True, False, False, False, "reference"),
        (torch.bfloat16, True, True, True, False, "reference"),
    ],
)
def test_backend_choice(monkeypatch, dtype, cuda, triton, force, cpu_compile, expected) -> None:
    monkeypatch.setattr(dispatch, "triton_available", lambda: triton)
    if force:
        monkeypatch.setenv("VECTORGATE_FORCE_REFERENCE", "1")
    if cpu_compile:
        monkeypatch.setenv("VECTORGATE_CPU_COMPILE", "1")
    tensors = [_fake(dtype, cuda) for _ in range(4)]
    assert dispatch.backend(*tensors) == expected


def test_one_unsupported_dtype_sends_everything_to_reference(monkeypatch) -> None:
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    assert dispatch.backend(_fake(torch.float32, True), _fake(torch.float64, True)) == "reference"


def test_cpu_use_never_loads_the_triton_kernels() -> None:
    # (torch itself imports triton when its custom-op machinery loads; what matters is that
    # our kernels are not decorated, so TRITON_INTERPRET set later still takes effect.)
    code = (
        "import sys, torch, vectorgate\n"
        "from vectorgate.functional import exp_gated_residual\n"
        "x, f, z = (torch.randn(4, 8, requires_grad=True) for _ in range(3))\n"
        "exp_gated_residual(x, f, z, torch.zeros(8, requires_grad=True)).sum().backward()\n"
        "print('vectorgate.kernels.triton_kernels' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _op_and_grads(x, f_x, z, c, delta):
    leaves = [t.detach().clone().requires_grad_() for t in (x, f_x, z, c)]
    y = exp_gated_residual(*leaves, delta=delta)
    dy = torch.linspace(-1, 1, y.numel()).reshape(y.shape).to(y.dtype)
    y.backward(dy)
    return y.detach(), *(t.grad for t in leaves)


def test_cpu_compiled_path_matches_reference(monkeypatch) -> None:
    # One shape only: the first call compiles (seconds), which a suite must pay once.
    gen = torch.Generator().manual_seed(0)
    x, f_x, z = (torch.randn(2, 17, 65, generator=gen) for _ in range(3))
    c = torch.randn(65, generator=gen) * 0.5
    monkeypatch.setenv("VECTORGATE_FORCE_REFERENCE", "1")
    expected = _op_and_grads(x, f_x, z, c, True)
    monkeypatch.delenv("VECTORGATE_FORCE_REFERENCE")
    monkeypatch.setenv("VECTORGATE_CPU_COMPILE", "1")
    assert dispatch.backend(x, f_x, z, c) == "cpu_compiled"
    got = _op_and_grads(x, f_x, z, c, True)
    for name, g, e in zip(("y", "dx", "df_x", "dz", "dc"), got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_autocast_mixed_dtypes_promote_and_match_fp32_math() -> None:
    # Under autocast the gate's GEMM gives a bf16 z and the branch a bf16 f_x while the
    # residual stream stays fp32: the op must take the mix, return fp32, and do its math
    # in fp32 on exactly the tensors it received.
    torch.manual_seed(0)
    gate = VectorGate(32, init_curvature=0.5)
    lin = torch.nn.Linear(32, 32)
    x = torch.randn(3, 5, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f_x = lin(x)
        z = gate.pre_activation(x)
        y = exp_gated_residual(x, f_x, z, gate.effective_curvature())
    assert (f_x.dtype, z.dtype, y.dtype) == (torch.bfloat16, torch.bfloat16, torch.float32)
    expected = reference.exp_gated_residual_forward(x, f_x, z, gate.effective_curvature())
    # A few float32 ulp (the CPU path divides by exp(s) where the reference multiplies by
    # exp(-s)); bf16 arithmetic anywhere would be off by ~1e-2.
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert gate.curvature.grad is not None and gate.curvature.grad.dtype == torch.float32
