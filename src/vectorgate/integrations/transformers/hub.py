"""``save_pretrained`` / ``from_pretrained`` for patched Hugging Face models.

A patched model's ``save_pretrained`` writes the gate tensors into ``model.safetensors``
with everything else, but transformers' ``from_pretrained`` builds the *unpatched* class
and reports the gate keys as unexpected: the gates would be lost. So:

- :func:`save_pretrained` calls ``model.save_pretrained`` and :func:`vectorgate.save_gates`
  into the same directory (the gates are small; ``vectorgate_config.json`` records how to
  re-patch);
- :func:`from_pretrained_patched` loads the base weights with ``cls.from_pretrained``,
  re-patches and loads the gates, bit-exact. transformers' load report, which would mark
  every gate key UNEXPECTED, is not printed; the keys it would report besides the gates
  (missing, mismatched or other unexpected ones) are logged as a warning instead.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Iterable
from typing import Any

from torch import nn

from vectorgate.patching import gates, load_gates, patch_state, read_gate_config, save_gates

__all__ = ["from_pretrained_patched", "save_pretrained"]

logger = logging.getLogger(__name__)


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


def _is_gate_key(key: str, gate_keys: set[str]) -> bool:
    """Whether a checkpoint key is one of the gate tensors, up to the head's prefix (a
    checkpoint of ``BertModel`` names ``encoder.layer.0...``, a classifier ``bert.encoder...``)."""
    return key in gate_keys or any(k.endswith("." + key) or key.endswith("." + k) for k in gate_keys)


def _listed(keys: Iterable[Any]) -> str:
    keys = sorted(str(k) for k in keys)
    return f"{keys[:5]}{f' and {len(keys) - 5} more' if len(keys) > 5 else ''}"


def from_pretrained_patched(cls: Any, directory: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """Load a model saved by :func:`save_pretrained`: base weights, then the gates.

    ``cls.from_pretrained`` builds the unpatched class, which has no place for the gate
    tensors in the checkpoint; its load report (which would mark every gate key
    UNEXPECTED) is kept quiet for this call, the gates are loaded by
    :func:`vectorgate.load_gates`, and what the report would have said about other keys
    (missing, mismatched, or unexpected keys that are not gates) is logged as a warning.

    Args:
        cls: a transformers model class or Auto class, e.g. ``AutoModelForSequenceClassification``.
        directory: a directory written by :func:`save_pretrained`.
        **kwargs: passed to ``cls.from_pretrained`` (``dtype``, ``device_map``, ...). With
            ``output_loading_info=True`` the result is ``(model, info)`` as transformers
            returns it, the gate keys left out of ``info["unexpected_keys"]``.

    Returns:
        The patched model with the saved gates.

    Raises:
        FileNotFoundError: ``directory`` holds no gate config (not written by
            :func:`save_pretrained`), checked before the base model is loaded.
    """
    read_gate_config(directory)
    want_info = bool(kwargs.pop("output_loading_info", False))
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report would list every gate key as UNEXPECTED
    try:
        model, info = cls.from_pretrained(directory, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    load_gates(model, directory)
    gate_keys = {f"{n}.{k}" if n else k for n, g in gates(model) for k in g.state_dict()}
    info = dict(info)
    info["unexpected_keys"] = type(info.get("unexpected_keys", []))(
        k for k in info.get("unexpected_keys", []) if not _is_gate_key(str(k), gate_keys)
    )
    notes = [f"{what} {_listed(info[key])}" for key, what in (
        ("missing_keys", "missing (newly initialised)"), ("unexpected_keys", "unexpected (not loaded)"),
        ("mismatched_keys", "of another shape (newly initialised)")) if info.get(key)]
    if notes:
        logger.warning("from_pretrained_patched: %s from %s: keys %s", type(model).__name__, directory, "; ".join(notes))
    return (model, info) if want_info else model
