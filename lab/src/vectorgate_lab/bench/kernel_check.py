"""Kernel-vs-reference cases and GPU correctness checks, runnable without pytest.

The tests (``tests/core/kernels/test_*.py``) and the GPU check script
(``benchmarks/gpu_check.sh``, via ``python -m vectorgate_lab.bench.kernel_check OUT.json``) share
this case list, so a GPU machine without pytest runs the same checks the CI runs under the
Triton interpreter.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
NAMES = ("y", "dx", "df_x", "dz", "dc")


@dataclass(frozen=True)
class Case:
    """One kernel test input: shape (..., d), dtypes, and how c / layout / delta vary."""

    shape: tuple[int, ...]
    dtype: torch.dtype = F32  # x's dtype; f_x and z take it too unless set below
    f_dtype: torch.dtype | None = None
    z_dtype: torch.dtype | None = None
    c_scalar: bool = False
    delta: bool = False
    noncontiguous: bool = False
    z_scale: float = 1.5
    c_scale: float = 0.7

    @property
    def id(self) -> str:
        def short(dt: torch.dtype) -> str:
            return str(dt).removeprefix("torch.")

        name = "x".join(map(str, self.shape)) + "-" + short(self.dtype)
        if self.f_dtype or self.z_dtype:
            name += f"-f{short(self.f_dtype or self.dtype)}-z{short(self.z_dtype or self.dtype)}"
        for flag in ("c_scalar", "delta", "noncontiguous"):
            if getattr(self, flag):
                name += "-" + flag
        if self.z_scale != 1.5 or self.c_scale != 0.7:
            name += f"-z{self.z_scale:g}c{self.c_scale:g}"
        return name


# Odd d (1, 7, 383, 4097) exercise the column masks, odd row counts the row masks.
SHAPES = [(3, 1), (5, 7), (2, 3, 33), (2, 383), (2, 4097), (67, 64)]
CASES: list[Case] = (
    [Case(s, dt) for s in SHAPES for dt in (F32, BF16, F16)]
    + [Case(s, dt, c_scalar=True, delta=True) for s in SHAPES for dt in (F32, BF16, F16)]
    + [Case(s, dt, delta=True) for s in [(5, 7), (2, 383)] for dt in (F32, BF16, F16)]
    + [Case(s, dt, noncontiguous=True) for s in [(9, 7), (6, 383)] for dt in (F32, BF16, F16)]
    + [Case((9, 7), F32, noncontiguous=True, c_scalar=True, delta=True)]
    # Mixed dtypes, as under autocast: an fp32 residual stream with half-precision branch/gate.
    + [Case(s, F32, f_dtype=BF16, z_dtype=BF16) for s in [(5, 7), (2, 3, 33), (2, 383)]]
    + [Case(s, F32, f_dtype=F16, z_dtype=BF16, delta=True) for s in [(5, 7), (2, 383)]]
    + [Case((4, 33), BF16, f_dtype=F32, z_dtype=F32)]
    # Saturated tanh, tiny |z| (the series branch) and a large curvature.
    + [Case((8, 65), F32, z_scale=40.0), Case((8, 65), F32, z_scale=1e-3), Case((8, 65), F32, c_scale=3.0)]
    + [Case((8, 65), BF16, z_scale=40.0, delta=True), Case((8, 65), F32, z_scale=0.05, delta=True)]
    # No rows at all: nothing to launch, dc must still come back as zeros of c's shape.
    + [Case((0, 7), F32), Case((2, 0, 33), BF16, c_scalar=True)]
)

#: GPU-sized cases, added on CUDA only (the interpreter would take minutes).
BIG_CASES: list[Case] = [
    Case((4096, 1024), BF16),
    Case((8, 512, 768), BF16, delta=True),
    Case((1000, 4097), F16, c_scalar=True),
    Case((2048, 1024), F32, noncontiguous=True),
    Case((4096, 768), F32, f_dtype=BF16, z_dtype=BF16),
]


def make_inputs(case: Case, seed: int, device: str = "cpu") -> tuple[Tensor, ...]:
    """(dy, x, f_x, z, c) for ``case``; non-contiguous cases get transposed / strided views."""
    gen = torch.Generator().manual_seed(seed)
    d = case.shape[-1]

    def draw(dtype: torch.dtype, scale: float = 1.0) -> Tensor:
        if case.noncontiguous:
            t = torch.randn(tuple(reversed(case.shape)), generator=gen).to(device).mT
        else:
            t = torch.randn(case.shape, generator=gen).to(device)
        return (t * scale).to(dtype)

    x = draw(case.dtype)
    f_x = draw(case.f_dtype or case.dtype)
    z = draw(case.z_dtype or case.dtype, case.z_scale)
    dy = draw(torch.promote_types(x.dtype, f_x.dtype))
    n_c = 1 if case.c_scalar else d
    c = (torch.randn(2 * n_c, generator=gen) * case.c_scale).to(device)
    c = c[::2] if case.noncontiguous else c[:n_c]
    return dy, x, f_x, z, c


def tolerance(dtype: torch.dtype, ref: Tensor, name: str) -> dict[str, float]:
    """assert_close tolerances for output ``name`` of dtype ``dtype`` against ``ref``.

    Both sides compute in fp32 from the same inputs, so fp32 outputs agree to a few ulp
    (tanh/exp are not the same code); a half-precision output may round to the neighbouring
    value (1 ulp). dc sums many terms in another order. atol is relative to the tensor's
    largest magnitude, for elements where terms cancel.
    """
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    if name == "dc":
        return {"rtol": 1e-4, "atol": 1e-5 * scale}
    if dtype == torch.float32:
        return {"rtol": 2e-5, "atol": 2e-6 * scale}
    return {"rtol": 1.6e-2 if dtype == torch.bfloat16 else 2e-3, "atol": 1e-3 * scale}


def problems(got: tuple[Tensor, ...], ref: tuple[Tensor, ...]) -> list[str]:
    """Every way ``got`` (y, dx, df_x, dz, dc) differs from ``ref``; empty when they match."""
    found = []
    for name, g, r in zip(NAMES, got, ref, strict=True):
        if g.dtype != r.dtype or g.shape != r.shape:
            found.append(f"{name}: {g.dtype} {tuple(g.shape)}, reference {r.dtype} {tuple(r.shape)}")
            continue
        if not torch.isfinite(g).all():
            found.append(f"{name} has non-finite values")
        try:
            torch.testing.assert_close(g, r, **tolerance(g.dtype, r, name))
        except AssertionError as err:
            found.append(f"{name}: {err}")
    return found


# ----------------------------------------------------------------------------- CUDA checks


def through_op(case: Case, seed: int, force_reference: bool, device: str = "cuda") -> tuple[Tensor, ...]:
    """(y, dx, df_x, dz, dc) from :func:`exp_gated_residual` and autograd on ``device``."""
    from vectorgate.functional import exp_gated_residual
    from vectorgate.kernels import dispatch
    from vectorgate_lab.bench.timing import env

    dy, *inputs = make_inputs(case, seed, device)
    leaves = [t.detach().requires_grad_() for t in inputs]
    with env("VECTORGATE_FORCE_REFERENCE", "1" if force_reference else None):
        expected = "reference" if force_reference else "triton"
        if dispatch.backend(dy, *leaves) != expected:
            raise RuntimeError(f"dispatch chose {dispatch.backend(dy, *leaves)!r}, expected {expected!r}")
        y = exp_gated_residual(*leaves, delta=case.delta)
        y.backward(dy)
    return y.detach(), *(t.grad for t in leaves)


def check_case(case: Case, device: str = "cuda") -> list[str]:
    """Triton path vs the reference, through the op, forward and backward."""
    return problems(through_op(case, 0, False, device), through_op(case, 0, True, device))


def check_dc_deterministic(device: str = "cuda") -> list[str]:
    from vectorgate.kernels import triton_kernels

    dy, x, f_x, z, c = make_inputs(Case((32768, 1024), BF16), 1, device)
    first = triton_kernels.backward(dy, x, f_x, z, c, False)[3]
    return [
        f"dc differs between identical runs (run {i})"
        for i in range(3)
        if not torch.equal(triton_kernels.backward(dy, x, f_x, z, c, False)[3], first)
    ]


def check_saved_only_inputs(device: str = "cuda") -> list[str]:
    from vectorgate.functional import exp_gated_residual

    x, f_x, z = (torch.randn(64, 256, device=device, requires_grad=True) for _ in range(3))
    c = torch.zeros(256, device=device, requires_grad=True)
    saved: list[int] = []

    def pack(t: Tensor) -> Tensor:
        # An empty tensor stands where the CPU path keeps exp(s); it holds no memory.
        if t.numel():
            saved.append(t.data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        exp_gated_residual(x, f_x, z, c)
    extra = set(saved) - {x.data_ptr(), f_x.data_ptr(), z.data_ptr(), c.data_ptr()}
    return [f"the op saved {len(extra)} tensors that are not its inputs"] if extra else []


def check_compile_fullgraph(dtype: torch.dtype, device: str = "cuda") -> list[str]:
    """A GatedResidual under torch.compile(fullgraph=True) matches eager, values and grads."""
    from vectorgate import GatedResidual

    torch.manual_seed(0)
    block = GatedResidual(torch.nn.Linear(128, 128), 128, init_curvature=0.3).to(device, dtype)
    x = torch.randn(4, 33, 128, device=device, dtype=dtype)
    eager_y = block(x)
    eager_y.float().square().sum().backward()
    eager_grads = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    compiled_y = torch.compile(block, fullgraph=True)(x)
    compiled_y.float().square().sum().backward()
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    found = []
    pairs = [("y", compiled_y, eager_y)] + [
        (name, p.grad, g) for (name, p), g in zip(block.named_parameters(), eager_grads, strict=True)
    ]
    for name, got, want in pairs:
        try:
            torch.testing.assert_close(got, want, **tol)
        except AssertionError as err:
            found.append(f"compiled vs eager {name}: {err}")
    return found


def check_autocast(device: str = "cuda") -> list[str]:
    from vectorgate import GatedResidual

    torch.manual_seed(0)
    block = GatedResidual(torch.nn.Linear(64, 64), 64, init_curvature=0.3).to(device)
    x = torch.randn(8, 64, device=device, requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = block(x)
    y.float().sum().backward()
    found = [] if y.dtype == torch.float32 else [f"autocast output dtype {y.dtype}, expected float32"]
    if not (torch.isfinite(x.grad).all() and torch.isfinite(block.gate.curvature.grad).all()):
        found.append("non-finite gradients under autocast")
    return found


def all_cuda_checks() -> dict[str, Callable[[], list[str]]]:
    """name -> check, for :func:`main` (the test file runs the same functions)."""
    checks: dict[str, Callable[[], list[str]]] = {
        f"case[{c.id}]": (lambda c=c: check_case(c)) for c in CASES + BIG_CASES
    }
    checks["dc_deterministic"] = check_dc_deterministic
    checks["saved_only_inputs"] = check_saved_only_inputs
    checks["compile_fullgraph_fp32"] = lambda: check_compile_fullgraph(torch.float32)
    checks["compile_fullgraph_bf16"] = lambda: check_compile_fullgraph(torch.bfloat16)
    checks["autocast_bf16"] = check_autocast
    return checks


def main(argv: list[str] | None = None) -> int:
    """Run every CUDA check, print one line each, write JSON to ``argv[0]`` if given."""
    argv = sys.argv[1:] if argv is None else argv
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    results = {}
    for name, check in all_cuda_checks().items():
        try:
            found = check()
        except Exception as err:  # report and go on: one broken case must not hide the rest
            found = [f"raised {type(err).__name__}: {err}"]
        results[name] = found
        print(("PASS " if not found else "FAIL ") + name + ("" if not found else ": " + found[0][:500]))
    failed = sum(bool(v) for v in results.values())
    print(f"{len(results) - failed} passed, {failed} failed")
    if argv:
        with open(argv[0], "w") as fh:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "failed": failed, "results": results}, fh, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
