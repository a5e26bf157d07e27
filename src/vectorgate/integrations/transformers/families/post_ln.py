"""BERT-like post-LN encoders: the residual is added inside the output modules.

``layer.attention.output`` (``BertSelfOutput``) and ``layer.output`` (``BertOutput``)
compute ``LayerNorm(dropout(dense(h)) + input_tensor)``; each is replaced by its gated
drop-in, built with ``from_module`` so the pretrained submodules are kept. A decoder layer
built with ``add_cross_attention=True`` has a third residual, ``layer.crossattention.output``
(a ``BertSelfOutput`` too): the ``"cross_attention"`` site, gated the same way.

Layers are recognised by structure (see :data:`BertFamily.expects`), so RoBERTa, ELECTRA,
XLM-RoBERTa, CamemBERT (BERT's layers, renamed), their subclasses and other copies of BERT's
layer are all found. Checked against transformers 5.24.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.integrations._structure import (
    callable_module,
    child_names,
    claimed_elsewhere,
    find_outermost,
    forward_takes,
    inherits,
    is_linear,
    is_norm,
)
from vectorgate.integrations.transformers.modules import GatedBertOutput, GatedBertSelfOutput
from vectorgate.patching import (
    Change,
    Family,
    GateSite,
    ReplaceModule,
    SetAttribute,
    register_family,
)
from vectorgate.skip.gather import run_on_kept

_MODELS = ("bert", "roberta", "electra", "xlm_roberta", "camembert")
_PREFIX = {"bert": "Bert", "roberta": "Roberta", "electra": "Electra", "xlm_roberta": "XLMRoberta",
           "camembert": "Camembert"}

#: transformers' BERT-like layer classes (subclasses match too).
KNOWN_LAYERS: tuple[tuple[str, str], ...] = tuple(
    (f"transformers.models.{m}.modeling_{m}", f"{_PREFIX[m]}Layer") for m in _MODELS
)
#: their output modules (``LayerNorm(dropout(dense(h)) + input_tensor)``).
KNOWN_OUTPUTS: tuple[tuple[str, str], ...] = tuple(
    (f"transformers.models.{m}.modeling_{m}", f"{_PREFIX[m]}{kind}") for m in _MODELS for kind in ("SelfOutput", "Output")
)
_OUTPUT_PARTS = {"dense", "LayerNorm", "dropout"}


def post_ln_output(module: Any, *, strict: bool) -> bool:
    """Whether ``module`` is a BERT-like output module: an ``nn.Linear`` ``dense``, a norm
    ``LayerNorm`` and a ``dropout``, called as ``module(hidden_states, input_tensor)``.

    ``strict`` (for classes vectorgate does not know): its children are exactly those three
    (besides a gate of vectorgate's own drop-ins), so nothing else can sit in the
    computation ``LayerNorm(dropout(dense(h)) + input_tensor)`` that the gated drop-in redoes.
    """
    if not (
        callable_module(module)
        and is_linear(getattr(module, "dense", None))
        and is_norm(getattr(module, "LayerNorm", None))
        and isinstance(getattr(module, "dropout", None), nn.Module)
    ):
        return False
    if not strict or inherits(module, KNOWN_OUTPUTS):
        return True
    return child_names(module) == _OUTPUT_PARTS and forward_takes(module, 2)


def is_bert_layer(module: nn.Module) -> bool:
    """The structural signature of a BERT-like layer (see :attr:`BertFamily.expects`)."""
    strict = not inherits(module, KNOWN_LAYERS)
    attention, intermediate = getattr(module, "attention", None), getattr(module, "intermediate", None)
    if not (
        callable_module(module)
        and callable_module(attention)
        and post_ln_output(getattr(attention, "output", None), strict=strict)
        and callable_module(intermediate)
        and is_linear(getattr(intermediate, "dense", None))
        and post_ln_output(getattr(module, "output", None), strict=strict)
    ):
        return False
    cross = getattr(module, "crossattention", None)
    return cross is None or post_ln_output(getattr(cross, "output", None), strict=strict)


def has_cross_attention(layer: nn.Module) -> bool:
    """Whether a BERT-like layer was built with cross-attention (``crossattention.output``)."""
    cross = getattr(layer, "crossattention", None)
    return cross is not None and post_ln_output(getattr(cross, "output", None), strict=False)


@register_family
class BertFamily(Family):
    name = "bert"
    description = "BERT, RoBERTa, ELECTRA, XLM-RoBERTa, CamemBERT and other copies of BertLayer"
    expects = (
        "a layer with `attention.output` and `output` modules that each hold an nn.Linear `dense`, "
        "a norm `LayerNorm` and a `dropout` and are called as (hidden_states, input_tensor), and "
        "`intermediate.dense` (nn.Linear); optionally `crossattention.output` alike"
    )
    sites = ("attention", "cross_attention", "mlp")
    skip_sites = ("mlp",)
    # The gated output module gets the sub-layer's input x, which these projections read too.
    stack_targets: ClassVar[dict[str, str]] = {"attention": "attention.self.query", "mlp": "intermediate.dense"}
    stack_reads = "x"

    structural = True

    def find_layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        claimed = claimed_elsewhere(model)
        return find_outermost(model, lambda m: id(m) not in claimed and is_bert_layer(m))

    def layer_sites(self, layer: nn.Module) -> tuple[str, ...]:
        """``("attention", "mlp")``, with ``"cross_attention"`` between them when the layer has it."""
        return self.sites if has_cross_attention(layer) else ("attention", "mlp")

    def _output(self, layer: nn.Module, site: str) -> nn.Module:
        if site == "attention":
            return layer.attention.output
        if site == "cross_attention":
            return layer.crossattention.output
        return layer.output

    def site_dim(self, layer: nn.Module, site: str) -> int:
        if site == "cross_attention" and not has_cross_attention(layer):
            site = "mlp"  # never gated (see changes); any valid width will do
        return self._output(layer, site).dense.out_features

    def changes(self, layer: nn.Module, gates: dict[str, ResidualGate]) -> list[Change]:
        out: list[Change] = []
        if "attention" in gates:
            attn = layer.attention
            out.append(ReplaceModule(attn, "output", GatedBertSelfOutput.from_module(attn.output, gate=gates["attention"])))
        if "cross_attention" in gates and has_cross_attention(layer):  # layers without it are left as they are
            cross = layer.crossattention
            out.append(ReplaceModule(cross, "output", GatedBertSelfOutput.from_module(cross.output, gate=gates["cross_attention"])))
        if "mlp" in gates:
            out.append(ReplaceModule(layer, "output", GatedBertOutput.from_module(layer.output, gate=gates["mlp"])))
        return out

    def skip_changes(self, layer: nn.Module, site: str, gate_site: GateSite, skip: Any) -> list[Change]:
        """Override the layer's ``feed_forward_chunk`` (intermediate -> output) on the instance:
        the MLP's two GEMMs run on the kept tokens, a skipped token's branch output is 0."""
        dense_chunk = getattr(type(layer), "feed_forward_chunk", None)
        if not callable(dense_chunk):
            raise ValueError(
                f"token skipping in a BERT-like layer overrides its feed_forward_chunk (intermediate -> "
                f"output), which {type(layer).__name__} does not have"
            )
        out = layer.output

        def feed_forward_chunk(attention_output: Tensor) -> Tensor:
            _, keep = skip.decide(attention_output)
            if keep is None:  # every token kept: the dense path (the site takes the decision's z)
                return dense_chunk(layer, attention_output)
            f = run_on_kept(lambda h: out.dropout(out.dense(layer.intermediate(h))), attention_output, keep)
            return out.LayerNorm(gate_site.residual(attention_output, f))

        return [SetAttribute(layer, "feed_forward_chunk", feed_forward_chunk), SetAttribute(gate_site, "skip", skip)]
