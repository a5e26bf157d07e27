"""Op-level benchmark: one gated residual, naive vs compiled vs vectorgate's fused op.

Two parts are measured for each shape:

- ``elementwise``: given z, the step ``exp(s) * x + exp(-s) * f_x`` alone
  (:func:`vectorgate.functional.exp_gated_residual`); the CPU target of the kernel issue.
- ``gate``: the whole gate, ``z = x @ W^T + b`` by the usual GEMM, then the elementwise part
  (the BASELINES.md definition).

The floor charges the GEMMs as measured in the same run and every tensor pass (one read or
write of an ``n x d`` tensor) at the measured copy bandwidth: elementwise forward 4 passes
(read x, f, z; write y), forward+backward 11 (backward reads dy, x, f, z, writes dx, df, dz);
gate forward 1 GEMM + 3 passes, forward+backward 3 GEMMs + 8 passes (z never leaves the
GEMM's epilogue at the limit), as BASELINES.md counts them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from vectorgate.functional import exp_gated_residual
from vectorgate.kernels import dispatch
from vectorgate_lab.bench.naive import naive_gated_residual
from vectorgate_lab.bench.timing import (
    copy_bandwidth,
    env,
    interleaved_medians,
    saved_for_backward,
    time_once,
)

PASSES = {"elementwise": (4, 11), "gate": (3, 8)}
GEMMS = {"elementwise": (0, 0), "gate": (1, 3)}


@dataclass
class OpBenchConfig:
    """What to measure. Shapes are (tokens, d); times are medians of ``reps`` rounds."""

    device: str = "cpu"
    dtype: str = "float32"
    shapes: list[tuple[int, int]] = field(default_factory=lambda: [(4096, 768)])
    parts: tuple[str, ...] = ("elementwise", "gate")
    reps: int = 9
    warmup: int = 2
    compile: bool = True  # include naive under torch.compile
    cpu_compiled: bool = True  # on the CPU, also the VECTORGATE_CPU_COMPILE=1 path
    bandwidth_mib: int = 256


def _fused(x: Tensor, f_x: Tensor, z: Tensor, c: Tensor) -> Tensor:
    return exp_gated_residual(x, f_x, z, c)


#: VECTORGATE_CPU_COMPILE while a fused implementation runs, forward *and* backward (the
#: custom op dispatches again in backward, after the forward call has returned).
_CPU_COMPILE_ENV: dict[str, str | None] = {"vectorgate": None, "vectorgate_cpu_compiled": "1"}


def implementations(device: torch.device, cfg: OpBenchConfig) -> dict[str, Callable]:
    """name -> ``fn(x, f_x, z, c) -> y``. "vectorgate" is what dispatch picks by default."""
    impls: dict[str, Callable] = {"naive_eager": naive_gated_residual}
    if cfg.compile:
        impls["naive_compiled"] = torch.compile(naive_gated_residual)
    impls["vectorgate"] = _fused
    if device.type == "cpu" and cfg.cpu_compiled:
        impls["vectorgate_cpu_compiled"] = _fused
    return impls


def _backend(impl: str, x: Tensor) -> str:
    """What ran the fused op for ``impl`` ("" for the naive ones)."""
    if impl not in _CPU_COMPILE_ENV:
        return ""
    with env("VECTORGATE_CPU_COMPILE", _CPU_COMPILE_ENV[impl]):
        return dispatch.backend(x)


def _inputs(n: int, d: int, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*shape: int, scale: float = 1.0) -> Tensor:
        t = torch.randn(shape, generator=gen, device=device) * scale
        return t.to(dtype).requires_grad_()

    return {
        "x": rand(n, d), "f_x": rand(n, d), "z": rand(n, d), "dy": rand(n, d).detach(),
        "W": rand(d, d, scale=d**-0.5), "b": rand(d, scale=0.1),
        "c": (torch.randn(d, generator=gen, device=device) * 0.5).requires_grad_(),
    }


def _calls(name: str, part: str, impl: Callable, t: dict[str, Tensor]) -> tuple[Callable, Callable]:
    """(forward, forward+backward) closures for one part and implementation."""
    if part == "elementwise":
        leaves = (t["x"], t["f_x"], t["z"], t["c"])

        def fwd() -> Tensor:
            return impl(t["x"], t["f_x"], t["z"], t["c"])
    else:
        leaves = (t["x"], t["f_x"], t["W"], t["b"], t["c"])

        def fwd() -> Tensor:
            return impl(t["x"], t["f_x"], F.linear(t["x"], t["W"], t["b"]), t["c"])

    def fwd_bwd() -> tuple[Tensor, ...]:
        # autograd.grad rather than .backward(): no accumulation into .grad to time.
        return torch.autograd.grad(fwd(), leaves, t["dy"])

    if name not in _CPU_COMPILE_ENV:
        return fwd, fwd_bwd
    value = _CPU_COMPILE_ENV[name]

    def fwd_env() -> Tensor:
        with env("VECTORGATE_CPU_COMPILE", value):
            return fwd()

    def fwd_bwd_env() -> tuple[Tensor, ...]:
        with env("VECTORGATE_CPU_COMPILE", value):
            return fwd_bwd()

    return fwd_env, fwd_bwd_env


def _gemm_ms(t: dict[str, Tensor], device: torch.device, cfg: OpBenchConfig) -> tuple[float, float]:
    """(forward GEMM, the two backward GEMMs) in ms, as the gate's floor charges them."""
    with torch.no_grad():
        x, w, b, dz = t["x"], t["W"], t["b"], t["dy"]
        ms = interleaved_medians(
            {
                "fwd": lambda: F.linear(x, w, b),
                "bwd": lambda: (dz @ w, dz.t() @ x),
            },
            device, cfg.reps, cfg.warmup,
        )
    return ms["fwd"], ms["bwd"]


def run_op_bench(cfg: OpBenchConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Measure every implementation on every shape and part. Returns a JSON-ready dict."""
    device = torch.device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    say = progress or (lambda msg: None)
    bandwidth = copy_bandwidth(device, cfg.bandwidth_mib << 20)
    say(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read+write)")
    impls = implementations(device, cfg)
    rows = []
    for n, d in cfg.shapes:
        t = _inputs(n, d, dtype, device)
        pass_ms = n * d * t["x"].element_size() / bandwidth * 1e3
        gemm_fwd, gemm_bwd = _gemm_ms(t, device, cfg) if "gate" in cfg.parts else (0.0, 0.0)
        for part in cfg.parts:
            say(f"{part} {n}x{d} {cfg.dtype}")
            calls = {name: _calls(name, part, impl, t) for name, impl in impls.items()}
            first = {name: time_once(fb, device) for name, (_, fb) in calls.items()}
            fwd = interleaved_medians({k: v[0] for k, v in calls.items()}, device, cfg.reps, cfg.warmup)
            fwd_bwd = interleaved_medians({k: v[1] for k, v in calls.items()}, device, cfg.reps, cfg.warmup)
            p_fwd, p_all = PASSES[part]
            g_fwd, g_all = GEMMS[part]
            floor_fwd = g_fwd * gemm_fwd + p_fwd * pass_ms
            floor_all = (gemm_fwd + gemm_bwd if g_all else 0.0) + p_all * pass_ms
            for name, (f, _) in calls.items():
                saved = saved_for_backward(f, t["x"], (t["x"], t["f_x"], t["W"], t["b"], t["c"]))
                rows.append({
                    "part": part, "n": n, "d": d, "dtype": cfg.dtype, "impl": name,
                    "backend": _backend(name, t["x"]),
                    "fwd_ms": fwd[name], "fwd_bwd_ms": fwd_bwd[name], "first_call_s": first[name],
                    "floor_fwd_ms": floor_fwd, "floor_fwd_bwd_ms": floor_all,
                    "fwd_bwd_vs_floor": fwd_bwd[name] / floor_all,
                    "fwd_bwd_vs_naive": fwd_bwd[name] / fwd_bwd["naive_eager"],
                    "saved_extra_like_x": saved.extra_like_x,
                    "saved_extra_mib": saved.extra_bytes / 2**20,
                })
    return {"config": asdict(cfg), "copy_bandwidth_gbs": bandwidth / 1e9, "rows": rows}
