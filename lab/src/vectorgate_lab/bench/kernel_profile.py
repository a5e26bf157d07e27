"""Where the time of one gate goes: per-kernel GPU time and achieved bandwidth.

``python -m vectorgate_lab.bench.kernel_profile [N D DTYPE]`` profiles one forward+backward of the
fused op (given z) and of the naive formula with ``torch.profiler`` and prints, per GPU
kernel, its time and the bandwidth it reached if it moved ``passes`` tensors of ``N x D``
(the fused kernels: forward 4, backward 7), to compare with the copy bandwidth.
"""

from __future__ import annotations

import sys

import torch

from vectorgate.functional import exp_gated_residual
from vectorgate_lab.bench.naive import naive_gated_residual
from vectorgate_lab.bench.timing import copy_bandwidth


def _device_us(event) -> float:
    # The attribute was renamed across torch versions.
    for name in ("device_time_total", "cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def profile_gate(n: int, d: int, dtype: torch.dtype, reps: int = 5) -> list[dict]:
    """Rows of {impl, kernel, calls, us_per_call} for one fwd+bwd, averaged over ``reps``."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device("cuda")
    x, f_x, z = (torch.randn(n, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    dy = torch.randn(n, d, device=device, dtype=dtype)
    c = torch.randn(d, device=device, requires_grad=True)
    rows = []
    for impl, fn in (("vectorgate", exp_gated_residual), ("naive_eager", naive_gated_residual)):
        for _ in range(3):
            torch.autograd.grad(fn(x, f_x, z, c), (x, f_x, z, c), dy)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                torch.autograd.grad(fn(x, f_x, z, c), (x, f_x, z, c), dy)
            torch.cuda.synchronize()
        for event in prof.key_averages():
            us = _device_us(event)
            if us > 0:
                rows.append({"impl": impl, "kernel": event.key[:80], "calls": event.count // reps,
                             "us_per_step": us / reps})
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    n, d = (int(argv[0]), int(argv[1])) if len(argv) >= 2 else (32768, 1024)
    dtype = getattr(torch, argv[2]) if len(argv) >= 3 else torch.bfloat16
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    bw = copy_bandwidth(torch.device("cuda"), 256 << 20)
    pass_us = n * d * torch.empty((), dtype=dtype).element_size() / bw * 1e6
    print(f"{n}x{d} {dtype}: copy bandwidth {bw / 1e9:.0f} GB/s, one tensor pass {pass_us:.1f} us")
    print(f"floor of the fused op: forward 4 passes {4 * pass_us:.1f} us, backward 7 passes {7 * pass_us:.1f} us")
    print("| impl | kernel | calls/step | us/step | = passes at copy bandwidth |")
    print("|---|---|---|---|---|")
    for r in sorted(profile_gate(n, d, dtype), key=lambda r: (r["impl"], -r["us_per_step"])):
        print(f"| {r['impl']} | {r['kernel']} | {r['calls']} | {r['us_per_step']:.1f} | "
              f"{r['us_per_step'] / pass_us:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
