"""PEFT adapters as comparison arms: LoRA, DoRA and (IA)^3 from the ``peft`` package.

We wrap the maintained implementations rather than re-write them. Targets follow PEFT's own
defaults for BERT: LoRA/DoRA on ``query`` and ``value``; (IA)^3 on ``key``, ``value`` and the
``output.dense`` layers, as PEFT's model-type table sets them.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vectorgate_lab.compare.spec import VariantSpec

__all__ = ["PEFT_ARMS", "build_peft_arm"]

#: arm name -> the keyword arguments it accepts.
PEFT_ARMS: dict[str, set[str]] = {"lora": {"r", "alpha"}, "dora": {"r", "alpha"}, "ia3": set()}


def _peft() -> Any:
    try:
        import peft
    except ImportError as err:
        raise ImportError("the lora/dora/ia3 arms need peft: `pip install vectorgate[peft]`") from err
    return peft


def build_peft_arm(model: nn.Module, spec: VariantSpec, *, keep_trainable: tuple[str, ...]) -> nn.Module:
    """``model`` wrapped by the PEFT adapter ``spec`` names; ``keep_trainable`` modules train too.

    Raises:
        ValueError: not a PEFT arm, or a keyword it does not take.
    """
    if spec.variant not in PEFT_ARMS:
        raise ValueError(f"{spec.variant!r} is not a PEFT arm; available: {', '.join(PEFT_ARMS)}")
    unknown = set(spec.kwargs) - PEFT_ARMS[spec.variant]
    if unknown:
        raise ValueError(f"{spec.variant} takes {sorted(PEFT_ARMS[spec.variant]) or 'no arguments'}, "
                         f"got {sorted(unknown)}")
    peft = _peft()
    if spec.variant == "ia3":
        # PEFT's own targets for BERT (its model-type table): what a PEFT user gets.
        config = peft.IA3Config(modules_to_save=list(keep_trainable))
    else:
        r = int(spec.kwargs.get("r", 8))
        config = peft.LoraConfig(
            r=r, lora_alpha=spec.kwargs.get("alpha", 2 * r), target_modules=["query", "value"],
            lora_dropout=0.0, use_dora=spec.variant == "dora", modules_to_save=list(keep_trainable),
        )
    return peft.get_peft_model(model, config)
