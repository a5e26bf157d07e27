"""DistilBERT: post-LN with the residual added in ``TransformerBlock.forward``.

``sa_layer_norm(attention(x)[0] + x)`` and ``output_layer_norm(ffn(x) + x)``: each branch is
called with the residual stream x itself, so a forward hook on the branch reads x from
its input and returns the gate's delta; the block's LayerNorm then sees
``alpha * x + beta * f`` (exactly ``x + f`` at c = 0). Checked against transformers 5.24.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from vectorgate.base import ResidualGate
from vectorgate.integrations.transformers.families.pre_norm import GATES_ATTR
from vectorgate.patching import AddModule, Change, Family, GateBranchOutput, register_family


@register_family
class DistilBertFamily(Family):
    name = "distilbert"
    description = "DistilBERT (TransformerBlock)"
    branches: ClassVar[dict[str, str]] = {"attention": "attention", "mlp": "ffn"}

    def find_layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return [
            (n, m) for n, m in self.layers_of_class(model, ("TransformerBlock",))
            if type(m).__module__.endswith("modeling_distilbert")
        ]

    def site_dim(self, layer: nn.Module, site: str) -> int:
        return int(layer.sa_layer_norm.normalized_shape[-1])

    def changes(self, layer: nn.Module, gates: dict[str, ResidualGate]) -> list[Change]:
        out: list[Change] = [AddModule(layer, GATES_ATTR, nn.ModuleDict(gates))]
        out += [GateBranchOutput(getattr(layer, self.branches[s]), g, capture=None) for s, g in gates.items()]
        return out
