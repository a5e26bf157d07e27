"""BERT-like post-LN encoders: the residual is added inside the output modules.

``layer.attention.output`` (``BertSelfOutput``) and ``layer.output`` (``BertOutput``)
compute ``LayerNorm(dropout(dense(h)) + input_tensor)``; each is replaced by its gated
drop-in, built with ``from_module`` so the pretrained submodules are kept.
Checked against transformers 5.24: RoBERTa, ELECTRA, XLM-RoBERTa and CamemBERT layers
are BERT's, renamed.
"""

from __future__ import annotations

from torch import nn

from vectorgate.base import ResidualGate
from vectorgate.integrations.transformers.modules import GatedBertOutput, GatedBertSelfOutput
from vectorgate.patching import Change, Family, ReplaceModule, register_family


@register_family
class BertFamily(Family):
    name = "bert"
    description = "BERT, RoBERTa, ELECTRA, XLM-RoBERTa, CamemBERT (BertLayer and its copies)"
    layer_classes = ("BertLayer", "RobertaLayer", "ElectraLayer", "XLMRobertaLayer", "CamembertLayer")

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
