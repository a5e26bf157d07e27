"""Test helper shared by the library's peer tests (tests/core/test_variants_peers.py) and the
lab's (tests/lab/test_peers_hyper.py): the width they use, a seeded ``(x, f)`` pair, and a way
to move a module's parameters away from their init.
"""

from __future__ import annotations

import torch
from torch import nn

DIM = 8


def pair(seed: int = 0, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded ``(x, f)`` pair of shape ``(3, 5, DIM)``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 5, DIM, generator=g, dtype=dtype), torch.randn(3, 5, DIM, generator=g, dtype=dtype)


def moved(module: nn.Module) -> nn.Module:
    """Add ``0.3 * N(0, 1)`` noise (seed 1) to every parameter of ``module``, in place; return it."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module
