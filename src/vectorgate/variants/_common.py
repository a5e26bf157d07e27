"""Helpers shared by the peer residual variants."""

from __future__ import annotations

from torch import Tensor

from vectorgate._checks import check_floating, check_last_dim, check_same_shape
from vectorgate.discovery import count_parameters


def check_pair(x: Tensor, f_x: Tensor, dim: int) -> None:
    """Check x and f_x are floating ``(..., dim)`` tensors of one shape (clear errors, no broadcasting)."""
    check_floating("x", x)
    check_floating("f_x", f_x)
    check_last_dim("x", x, dim)
    check_same_shape("x", x, "f_x", f_x)


def check_dim(dim: object) -> int:
    """Return ``dim`` if it is a positive int, else raise ``ValueError``."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    return dim


def num_parameters(module) -> int:
    """Number of parameters of ``module`` (see :func:`vectorgate.discovery.count_parameters`)."""
    return count_parameters(module)
