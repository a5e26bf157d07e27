"""Test helper: move VectorGates away from their identity init, so what g reads matters."""

from __future__ import annotations

import torch
from torch import nn

from vectorgate.discovery import gates


def liven_gates(model: nn.Module, curvature: float = 0.5, *, seed: int = 0, scale: float = 0.3) -> None:
    """Set every gate's curvature to ``curvature`` and draw g's weights from N(0, scale^2)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, gate in gates(model):
            gate.curvature.fill_(curvature)
            for p in gate.proj.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
