"""The one registry helper: a name -> entry dict that refuses to rebind a name silently."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

__all__ = ["register"]

T = TypeVar("T")


def register(
    registry: MutableMapping[str, Any],
    name: str,
    entry: T,
    *,
    kind: str,
    same: Callable[[Any, T], bool] | None = None,
) -> T:
    """Add ``entry`` under ``name`` and return it.

    Args:
        registry: the dict to add to (e.g. the families or the residual variants).
        name: a non-empty name.
        entry: what to register.
        kind: what the registry holds, for the error message (``"variant"``, ``"family"``).
        same: where re-registering a name is harmless (re-importing a module that registers a
            class), ``same(old, entry)`` says so and the new entry replaces the old.

    Raises:
        ValueError: ``name`` is empty, or taken by another entry.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} needs a non-empty name, got {name!r}")
    if name in registry and not (same is not None and same(registry[name], entry)):
        raise ValueError(f"a {kind} named {name!r} is already registered ({registry[name]!r})")
    registry[name] = entry
    return entry
