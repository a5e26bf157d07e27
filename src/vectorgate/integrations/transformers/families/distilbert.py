"""DistilBERT: post-LN with the residual added in ``TransformerBlock.forward``.

``sa_layer_norm(attention(x)[0] + x)`` and ``output_layer_norm(ffn(x) + x)``: each branch is
called with the residual stream x itself, so a forward hook on the branch reads x from
its input and returns the gate's delta; the block's LayerNorm then sees
``alpha * x + beta * f`` (exactly ``x + f`` at c = 0). Checked against transformers 5.24.

Blocks are recognised by structure (:attr:`DistilBertFamily.expects`): DistilBERT's
``TransformerBlock``, its subclasses, and other classes with exactly its four children.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from vectorgate.base import ResidualGate
from vectorgate.integrations._structure import (
    callable_module,
    child_names,
    claimed_elsewhere,
    find_outermost,
    inherits,
    is_norm,
    norm_dim,
)
from vectorgate.integrations.transformers.families.pre_norm import GATES_ATTR
from vectorgate.patching import AddModule, Change, Family, GateBranchOutput, register_family

KNOWN_LAYERS = (("transformers.models.distilbert.modeling_distilbert", "TransformerBlock"),)
_PARTS = {"attention": callable_module, "sa_layer_norm": is_norm, "ffn": callable_module, "output_layer_norm": is_norm}


def is_distilbert_block(module: nn.Module) -> bool:
    """The structural signature of a DistilBERT block (see :attr:`DistilBertFamily.expects`)."""
    if not callable_module(module) or not all(check(getattr(module, n, None)) for n, check in _PARTS.items()):
        return False
    return inherits(module, KNOWN_LAYERS) or child_names(module) == set(_PARTS)


@register_family
class DistilBertFamily(Family):
    name = "distilbert"
    description = "DistilBERT (TransformerBlock)"
    expects = (
        "a block with modules `attention`, `ffn` and norms `sa_layer_norm`, `output_layer_norm` "
        "(sa_layer_norm(attention(x) + x), then output_layer_norm(ffn(x) + x)), and no other child"
    )
    branches: ClassVar[dict[str, str]] = {"attention": "attention", "mlp": "ffn"}

    structural = True

    def find_layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        claimed = claimed_elsewhere(model)
        return find_outermost(model, lambda m: id(m) not in claimed and is_distilbert_block(m))

    def site_dim(self, layer: nn.Module, site: str) -> int:
        dim = norm_dim(layer.sa_layer_norm)
        if dim is None:
            raise ValueError(f"cannot tell the feature dimension of {type(layer.sa_layer_norm).__name__} "
                             f"in {type(layer).__name__}")
        return dim

    def changes(self, layer: nn.Module, gates: dict[str, ResidualGate]) -> list[Change]:
        out: list[Change] = [AddModule(layer, GATES_ATTR, nn.ModuleDict(gates))]
        out += [GateBranchOutput(getattr(layer, self.branches[s]), g, capture=None) for s, g in gates.items()]
        return out
