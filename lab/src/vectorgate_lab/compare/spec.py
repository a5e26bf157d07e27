"""What one comparison arm is: a residual variant, its kwargs, and how it trains.

Written on the command line as ``name`` or ``name[key=value,...]``, e.g.
``vectorgate[init_curvature=0.5,gate_lr_mult=10]`` or ``lora[r=8]``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["VariantSpec", "parse_variant"]

_SPEC = re.compile(r"^(?P<name>[A-Za-z_][\w]*)(\[(?P<args>[^\]]*)\])?$")
# Keys that configure training, not the gate; every other key goes to build_gate.
_TRAIN_KEYS = ("lr_mult", "gate_lr_mult", "gate_weight_decay", "skip_budget", "skip_weight", "skip_warmup")


@dataclass(frozen=True)
class VariantSpec:
    """One arm of a comparison.

    Attributes:
        label: how the arm is named in tables and plots (the string it was parsed from).
        variant: a name from :data:`vectorgate.variants.VARIANTS` or from
            :data:`vectorgate_lab.peers.STREAM_VARIANTS`, or one a task handles itself
            (``lora`` in the gate-only task).
        kwargs: passed to the gate (``init_curvature``, ``rank``, ...) or to the task's
            own arm (``r`` for LoRA).
        lr_mult: multiplies the task's learning rate for every parameter.
        gate_lr_mult: further multiplies the learning rate of the gates' parameters.
        gate_weight_decay: AdamW decay of the gates' matrices (None: the library default,
            :func:`vectorgate.param_groups`' ``gate_weight_decay``).
        skip_budget: train with a :class:`vectorgate.skip.SkipBudget` of this target share
            of tokens (None: no budget), and score the trained model at the task's skip
            ratios (``skip_curve`` in the record).
        skip_weight: the budget's penalty weight.
        skip_warmup: the budget's warm-up, as a share of the run's steps.
    """

    label: str
    variant: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    lr_mult: float = 1.0
    gate_lr_mult: float = 1.0
    gate_weight_decay: float | None = None
    skip_budget: float | None = None
    skip_weight: float = 1.0
    skip_warmup: float = 0.3


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_variant(text: str) -> VariantSpec:
    """Parse ``name`` or ``name[key=value,...]`` into a :class:`VariantSpec`.

    Raises:
        ValueError: malformed text, a key given twice, a non-positive/non-finite lr multiplier
            or a negative gate_weight_decay.
    """
    m = _SPEC.match(text.strip())
    if not m:
        raise ValueError(f"variant must look like 'name' or 'name[key=value,...]', got {text!r}")
    kwargs: dict[str, Any] = {}
    train: dict[str, float | None] = {"lr_mult": 1.0, "gate_lr_mult": 1.0, "gate_weight_decay": None,
                                      "skip_budget": None, "skip_weight": 1.0, "skip_warmup": 0.3}
    seen: set[str] = set()
    for item in filter(None, (m.group("args") or "").split(",")):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"in {text!r}: expected key=value, got {item!r}")
        if key in seen:
            raise ValueError(f"in {text!r}: {key!r} given twice")
        seen.add(key)
        value = _value(raw)
        if key in ("skip_budget", "skip_warmup"):
            if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and 0 <= value < 1):
                raise ValueError(f"in {text!r}: {key} must be a share in [0, 1), got {raw!r}")
            train[key] = float(value)
        elif key in _TRAIN_KEYS:
            lowest_ok = 0.0 if key in ("gate_weight_decay", "skip_weight") else math.nextafter(0.0, 1.0)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value >= lowest_ok):
                kind = "a number >= 0" if key in ("gate_weight_decay", "skip_weight") else "a positive number"
                raise ValueError(f"in {text!r}: {key} must be {kind}, got {raw!r}")
            train[key] = float(value)
        else:
            kwargs[key] = value
    return VariantSpec(label=text.strip(), variant=m.group("name"), kwargs=kwargs, **train)
