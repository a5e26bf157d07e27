"""Pre-norm layers whose residual add lives in the layer's own forward (``x + branch(norm(x))``).

Nothing of transformers' forward is copied: a forward pre-hook on the pre-norm captures
the residual stream x, and a forward hook on the branch turns its output ``f`` into the
gate's delta (``expm1(s) * x + exp(-s) * f``), which the layer then adds to x. The gates
are registered on the layer as ``layer.residual_gates[site]``; pretrained keys are unchanged.

Checked against transformers 5.24:

- GPT-2 ``GPT2Block``: ``ln_1 -> attn``, ``ln_2 -> mlp`` (cross-attention is not gated).
- Llama ``LlamaDecoderLayer`` and the decoder layers whose forward is Llama's verbatim
  (Mistral, Qwen2, Qwen3, Gemma): ``input_layernorm -> self_attn``,
  ``post_attention_layernorm -> mlp``.
- ViT ``ViTLayer``: ``layernorm_before -> attention``, ``layernorm_after -> mlp``. ViT
  applies ``self.dropout`` after the branch, so dropout acts on the gate's delta (the
  whole residual update, like drop path); ViT's default ``hidden_dropout_prob`` is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from vectorgate.base import ResidualGate
from vectorgate.patching import AddModule, Change, Family, GateBranchOutput, register_family
from vectorgate.skip.adapters import hooked_branch_skip_changes

GATES_ATTR = "residual_gates"


class PreNormFamily(Family):
    """A pre-norm family: per site, the (norm, branch) attribute names on the layer."""

    layer_classes: tuple[str, ...] = ()
    site_modules: ClassVar[dict[str, tuple[str, str]]] = {}
    skip_sites = ("mlp",)

    def find_layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return self.layers_of_class(model, self.layer_classes)

    def site_dim(self, layer: nn.Module, site: str) -> int:
        norm = getattr(layer, self.site_modules[site][0])
        shape = getattr(norm, "normalized_shape", None)
        if shape:
            return int(shape[-1])
        weight = getattr(norm, "weight", None)
        if isinstance(weight, nn.Parameter):
            return int(weight.shape[-1])
        raise ValueError(f"cannot tell the feature dimension of {type(norm).__name__} in {type(layer).__name__}")

    def changes(self, layer: nn.Module, gates: dict[str, ResidualGate]) -> list[Change]:
        out: list[Change] = [AddModule(layer, GATES_ATTR, nn.ModuleDict(gates))]
        for site, gate in gates.items():
            norm_name, branch_name = self.site_modules[site]
            out.append(GateBranchOutput(getattr(layer, branch_name), gate, capture=getattr(layer, norm_name)))
        return out

    def gate_at(self, layer: nn.Module, site: str) -> ResidualGate:
        return getattr(layer, GATES_ATTR)[site]

    def skip_changes(self, layer: nn.Module, site: str, skip: Any, patch_changes: Sequence[Change]) -> list[Change]:
        branch = getattr(layer, self.site_modules[site][1])
        return hooked_branch_skip_changes(branch, branch, skip, patch_changes)


@register_family
class GPT2Family(PreNormFamily):
    name = "gpt2"
    description = "GPT-2 (GPT2Block)"
    layer_classes = ("GPT2Block",)
    site_modules: ClassVar[dict[str, tuple[str, str]]] = {"attention": ("ln_1", "attn"), "mlp": ("ln_2", "mlp")}


@register_family
class LlamaFamily(PreNormFamily):
    name = "llama"
    description = "Llama, Mistral, Qwen2, Qwen3, Gemma (decoder layers with Llama's forward)"
    layer_classes = (
        "LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer", "GemmaDecoderLayer",
    )
    site_modules: ClassVar[dict[str, tuple[str, str]]] = {"attention": ("input_layernorm", "self_attn"), "mlp": ("post_attention_layernorm", "mlp")}


@register_family
class ViTFamily(PreNormFamily):
    name = "vit"
    description = "Hugging Face ViT (ViTLayer)"
    layer_classes = ("ViTLayer",)
    site_modules: ClassVar[dict[str, tuple[str, str]]] = {"attention": ("layernorm_before", "attention"), "mlp": ("layernorm_after", "mlp")}
