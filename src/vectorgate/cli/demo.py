"""``vectorgate demo``: build a gated residual block and show what its gates do."""

from __future__ import annotations

import argparse

HELP = "Run a tiny gated block on random input and print its gates (a smoke test of the install)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dim", type=int, default=16, help="feature dimension d (default 16)")
    parser.add_argument(
        "--init-curvature", type=float, default=0.5, help="initial curvature c (default 0.5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    import torch

    from vectorgate import GatedResidual

    if args.dim < 1:
        raise SystemExit(f"--dim must be a positive integer, got {args.dim}")
    torch.manual_seed(args.seed)
    block = GatedResidual(
        torch.nn.Linear(args.dim, args.dim), args.dim, init="random", init_curvature=args.init_curvature,
        return_gates=True,
    )
    x = torch.randn(4, args.dim)
    y, (alpha, beta, s) = block(x)
    print(block)
    print(f"x {tuple(x.shape)} -> y {tuple(y.shape)}")
    print(f"s in [{s.min():.4f}, {s.max():.4f}], |c| = {args.init_curvature:g}")
    print(f"alpha in [{alpha.min():.4f}, {alpha.max():.4f}]; max |alpha*beta - 1| = "
          f"{(alpha * beta - 1).abs().max():.2e}")
    return 0
