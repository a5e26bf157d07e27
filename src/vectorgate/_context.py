"""Small context managers shared by the stateful helpers (skip controller, skip budget)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import Tensor

__all__ = ["as_token_mask", "temporarily"]


@contextlib.contextmanager
def temporarily(obj: Any, **values: Any) -> Iterator[Any]:
    """Set attributes of ``obj`` for the block and put the previous values back after it,
    whatever happens inside."""
    previous = {name: getattr(obj, name) for name in values}
    for name, value in values.items():
        setattr(obj, name, value)
    try:
        yield obj
    finally:
        for name, value in previous.items():
            setattr(obj, name, value)


def as_token_mask(mask: Tensor | None) -> Tensor | None:
    """A ``(batch, tokens)`` mask as bool (None stays None: every token counts)."""
    return None if mask is None else mask.bool()
