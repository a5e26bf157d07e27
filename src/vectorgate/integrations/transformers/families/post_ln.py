"""BERT-like post-LN encoders: the residual is added inside the output modules.

``layer.attention.output`` (``BertSelfOutput``) and ``layer.output`` (``BertOutput``)
compute ``LayerNorm(dropout(dense(h)) + input_tensor)``; each is replaced by its gated
drop-in, built with ``from_module`` so the pretrained submodules are kept.
Checked against transformers 5.24: RoBERTa, ELECTRA, XLM-RoBERTa and CamemBERT layers
are BERT's, renamed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.integrations.transformers.modules import GatedBertOutput, GatedBertSelfOutput
from vectorgate.patching import Change, Family, ReplaceModule, SetAttribute, register_family
from vectorgate.skip.gather import run_on_kept


@register_family
class BertFamily(Family):
    name = "bert"
    description = "BERT, RoBERTa, ELECTRA, XLM-RoBERTa, CamemBERT (BertLayer and its copies)"
    layer_classes = ("BertLayer", "RobertaLayer", "ElectraLayer", "XLMRobertaLayer", "CamembertLayer")
    skip_sites = ("mlp",)

    def find_layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return self.layers_of_class(model, self.layer_classes)

    def site_dim(self, layer: nn.Module, site: str) -> int:
        return layer.output.dense.out_features

    def changes(self, layer: nn.Module, gates: dict[str, ResidualGate]) -> list[Change]:
        out: list[Change] = []
        if "attention" in gates:
            attn = layer.attention
            out.append(ReplaceModule(attn, "output", GatedBertSelfOutput.from_module(attn.output, gate=gates["attention"])))
        if "mlp" in gates:
            out.append(ReplaceModule(layer, "output", GatedBertOutput.from_module(layer.output, gate=gates["mlp"])))
        return out

    def gate_at(self, layer: nn.Module, site: str) -> ResidualGate:
        return layer.attention.output.gate if site == "attention" else layer.output.gate

    def skip_changes(self, layer: nn.Module, site: str, skip: Any, patch_changes: Sequence[Change]) -> list[Change]:
        """Override the layer's ``feed_forward_chunk`` (intermediate -> output) on the instance."""
        if "_stacked" in layer.output.__dict__:
            raise ValueError("token skipping needs unstacked gate projections: undo stack_gate_projections "
                             "(vectorgate.unpatch and patch again) before enable_skipping")
        dense_chunk = type(layer).feed_forward_chunk
        out = layer.output

        def feed_forward_chunk(attention_output: Tensor) -> Tensor:
            z, keep = skip.decide(attention_output)
            if z is None:
                return dense_chunk(layer, attention_output)
            skip.take_z(attention_output)  # z is used right here; hold nothing past the call
            f = run_on_kept(lambda h: out.dropout(out.dense(layer.intermediate(h))), attention_output, keep)
            return out.LayerNorm(out.gate.residual(attention_output, f, z))

        return [SetAttribute(layer, "feed_forward_chunk", feed_forward_chunk)]
