"""Named gate settings backed by the comparison in ``docs/results.md``.

``VectorGate()``'s own default stays the exact identity (c = 0): dropped into a pretrained
model it changes nothing until training moves c. A preset is a set of gate keyword
arguments for a situation where the evidence says something else works better::

    block = GatedResidual(mlp, 256, **vectorgate.presets.preset("from_scratch"))
    vectorgate.patch(model, **vectorgate.presets.preset("from_scratch"))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PRESETS", "Preset", "preset"]


@dataclass(frozen=True)
class Preset:
    """Gate keyword arguments plus the evidence for them.

    Attributes:
        name: registry name.
        gate_kwargs: passed to :class:`vectorgate.VectorGate` / ``build_gate`` / ``patch``.
        evidence: where the numbers are and what they showed (and did not).
    """

    name: str
    gate_kwargs: dict[str, Any] = field(default_factory=dict)
    evidence: str = ""


PRESETS: dict[str, Preset] = {
    "identity": Preset(
        "identity",
        {},
        "VectorGate's default (c = 0): bit-exact plain residual at init; the choice for pretrained "
        "models (docs/results.md, bert_rt: identical to plain at a shared learning rate).",
    ),
    "from_scratch": Preset(
        "from_scratch",
        {"init_curvature": 0.5},
        "Training from random init: c = 0.5 at init beat c = 0 and the plain residual on both "
        "from-scratch tasks of docs/results.md (vit_mnist 600 steps, charlm_shakespeare 350 steps, "
        "3 seeds each, beyond the seed spread); a cap (max_curvature=1) changed nothing there. "
        "Counter-evidence: a longer GPU probe (1000 steps, d=256, shared/BASELINES.md) found c = 0.5 behind "
        "plain by 0.07 bpc, so check it on long runs.",
    ),
}


def preset(name: str) -> dict[str, Any]:
    """A copy of the gate keyword arguments of preset ``name``.

    Raises:
        ValueError: unknown ``name`` (the message lists the presets).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return dict(PRESETS[name].gate_kwargs)
