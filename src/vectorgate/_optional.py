"""The one way vectorgate imports an optional dependency: fail with the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, *, extra: str, needed_by: str) -> ModuleType:
    """Import ``module``, or raise an ImportError that says what needs it and which extra of
    vectorgate installs it.

    Args:
        module: the module to import, e.g. ``"transformers"`` or ``"safetensors.torch"``.
        extra: the ``pip install vectorgate[extra]`` that brings it.
        needed_by: what needs it, for the message (e.g. ``"vectorgate.integrations.timm"``).

    Raises:
        ImportError: ``module`` is not installed (or fails to import), chained to the cause.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise ImportError(f"{needed_by} needs {package}: `pip install vectorgate[{extra}]`") from err
