"""``save_pretrained`` / ``from_pretrained`` for patched Hugging Face models.

A patched model's ``save_pretrained`` writes the gate tensors into ``model.safetensors``
with everything else, but transformers' ``from_pretrained`` builds the *unpatched* class
and reports the gate keys as unexpected: the gates would be lost. So:

- :func:`save_pretrained` calls ``model.save_pretrained`` and :func:`vectorgate.save_gates`
  into the same directory (the gates are small; ``vectorgate_config.json`` records how to
  re-patch);
- :func:`from_pretrained_patched` loads the base weights with ``cls.from_pretrained``,
  re-patches and loads the gates, bit-exact.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from torch import nn

from vectorgate.patching import load_gates, patch_state, save_gates

__all__ = ["from_pretrained_patched", "save_pretrained"]


def save_pretrained(model: nn.Module, directory: str | os.PathLike, **kwargs: Any) -> pathlib.Path:
    """``model.save_pretrained(directory, **kwargs)`` plus the gates and their config.

    Args:
        model: a patched transformers model.
        directory: output directory.
        **kwargs: passed to ``model.save_pretrained``.

    Returns:
        The directory.
    """
    if patch_state(model) is None:
        raise ValueError(f"{type(model).__name__} is not patched by vectorgate; use model.save_pretrained")
    model.save_pretrained(directory, **kwargs)
    return save_gates(model, directory)


def from_pretrained_patched(cls: Any, directory: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """Load a model saved by :func:`save_pretrained`: base weights, then the gates.

    Args:
        cls: a transformers model class or Auto class, e.g. ``AutoModelForSequenceClassification``.
        directory: a directory written by :func:`save_pretrained`.
        **kwargs: passed to ``cls.from_pretrained`` (``dtype``, ``device_map``, ...).

    Returns:
        The patched model with the saved gates. The gate keys that ``from_pretrained``
        itself does not know are exactly those restored by :func:`vectorgate.load_gates`.
    """
    model = cls.from_pretrained(directory, **kwargs)
    return load_gates(model, directory)
