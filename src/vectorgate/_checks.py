"""Input validation shared by the public entry points.

Every check raises with a message that says what was expected and what arrived, so a
user never has to decode a broadcasting error from deep inside an elementwise op.
"""

from __future__ import annotations

import torch


def check_floating(name: str, t: torch.Tensor) -> None:
    """Raise ``TypeError`` unless ``t`` is a real floating-point tensor."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float32, float16, bfloat16 or float64), "
            f"got dtype {t.dtype}"
        )


def check_last_dim(name: str, t: torch.Tensor, dim: int) -> None:
    """Raise ``ValueError`` unless ``t`` has at least one dimension and its last one is ``dim``."""
    if t.dim() == 0 or t.shape[-1] != dim:
        raise ValueError(
            f"{name} must have shape (..., {dim}) (last dimension = the gate's dim), "
            f"got shape {tuple(t.shape)}"
        )


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have identical shapes (no broadcasting)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape (no broadcasting), "
            f"got {name_a}: {tuple(a.shape)} and {name_b}: {tuple(b.shape)}"
        )


def check_broadcasts_to(name: str, t: torch.Tensor, target: torch.Size) -> None:
    """Raise ``ValueError`` unless ``t`` broadcasts to ``target`` without enlarging it."""
    try:
        out = torch.broadcast_shapes(t.shape, target)
    except RuntimeError:
        out = None
    if out != target:
        raise ValueError(
            f"{name} must broadcast to the residual's shape {tuple(target)} without changing it, "
            f"got shape {tuple(t.shape)}"
        )


def check_same_device(**tensors: torch.Tensor) -> None:
    """Raise ``ValueError`` when the given tensors do not all live on one device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{n}: {d}" for n, d in devices.items())
        raise ValueError(f"all tensors must be on the same device, got {listed}")


def check_curvature(c: torch.Tensor, dim: int) -> None:
    """Raise ``ValueError`` unless ``c`` is a 1-D tensor of size ``dim`` or 1."""
    check_floating("c (curvature)", c)
    if c.dim() != 1 or c.shape[0] not in (1, dim):
        raise ValueError(
            f"c (curvature) must be a 1-D tensor of shape ({dim},) or (1,), got shape {tuple(c.shape)}"
        )
