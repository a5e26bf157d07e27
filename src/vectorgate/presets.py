"""Named gate settings backed by the comparisons in ``docs/``.

``VectorGate()``'s own default (``init="zero_output"``) is the exact identity at init and
trains from the first step. A preset is a set of gate keyword arguments with the evidence
for it, e.g. to reproduce vectorgate 0.1 (``"v0.1"``)::

    block = GatedResidual(mlp, 256, **vectorgate.presets.preset("from_scratch"))
    vectorgate.patch(model, vectorgate.presets.PRESETS["from_scratch"].config(sites="mlp"))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vectorgate.patching.config import GateConfig

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

    def config(self, **fields: Any) -> GateConfig:
        """A :class:`~vectorgate.GateConfig` with this preset's gate arguments; ``fields`` set the
        other fields (``sites``, ``layers``, ...) or override single gate arguments."""
        return GateConfig(**{**self.gate_kwargs, **fields})


PRESETS: dict[str, Preset] = {
    "default": Preset(
        "default",
        {},
        "VectorGate's default since 0.2 (init='zero_output': g's output zero; c = 1, or since 0.5 "
        "under patch() half the depth cap log(65504) / n_sites, see vectorgate.depth): bit-exact "
        "identity at init and g trains from step 0. Evidence: docs/results.md (MiniLM, 5 paired "
        "seeds): gate-only on Rotten Tomatoes 0.749 +- 0.016 vs 0.576 (majority class) for v0.1's "
        "init; full fine-tuning level with plain on Rotten Tomatoes and SMS spam.",
    ),
    "v0.1": Preset(
        "v0.1",
        {"init": "random"},
        "vectorgate 0.1's default (random g, c = 0): also the identity at init, but g gets no "
        "gradient until c leaves 0; gate-only it never left the majority class (docs/results.md). "
        "Kept to reproduce 0.1 results.",
    ),
    "from_scratch": Preset(
        "from_scratch",
        {"init": "random", "init_curvature": 0.5},
        "Training from random init with random g and c = 0.5 (not the identity at init). "
        "docs/results_scratch.md (600 ViT and 350 char-LM steps, 3 seeds, far from converged): "
        "no difference measured against plain on the char-LM (paired test); a longer GPU probe "
        "(1000 steps, d=256, shared/BASELINES.md) found c = 0.5 behind plain by 0.07 bpc. "
        "Converged runs (docs/results_converged.md, 5 seeds each): better than plain on both "
        "tasks (char-LM -0.028 bits/char, p = 0.006; ViT +0.011 accuracy, p < 0.001), better than "
        "the default gate on the char-LM (p = 0.008) and level with it on the ViT (4 layers). "
        "The 200-step depth sweep (docs/results_sweeps.md) found it, like the default gate, far "
        "behind plain at 16 layers (+1.29 bits/char, p < 0.001): for 4 to 8 layers the setting "
        "to train from scratch with; deeper, check the first steps against plain. The default "
        "(the exact identity) is for pretrained models. Since 0.5 patch() caps c at "
        "log(65504) / n_sites, below this preset's 0.5 from 23 gated sites on: there it is refused "
        "with the cap named (docs/depth.md).",
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
