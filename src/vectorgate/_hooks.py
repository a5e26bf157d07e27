"""The lifecycle shared by the objects that watch gates through forward hooks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import torch

__all__ = ["HookedWatcher"]

W = TypeVar("W", bound="HookedWatcher")


class HookedWatcher:
    """``start()`` registers hooks, ``stop()`` removes them, and the object is a context
    manager that does both. Subclasses implement :meth:`_register` (return the handles) and
    may extend :meth:`stop`."""

    _handles: list[torch.utils.hooks.RemovableHandle]
    _busy = "running"  # the word for "hooks registered" in the error of a second start()

    def _register(self) -> Iterable[torch.utils.hooks.RemovableHandle]:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """Whether hooks are registered right now."""
        return bool(self._handles)

    def start(self: W) -> W:
        """Register the hooks.

        Raises:
            RuntimeError: they are registered already.
        """
        if self._handles:
            raise RuntimeError(f"{type(self).__name__} is already {self._busy}; call stop() first")
        self._handles.extend(self._register())
        return self

    def stop(self) -> None:
        """Remove every hook (safe to call twice)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self: W) -> W:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
