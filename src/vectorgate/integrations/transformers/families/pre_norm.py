"""Pre-norm layers whose residual add lives in the layer's own forward (``x + branch(norm(x))``).

Nothing of transformers' forward is copied: a forward pre-hook on the pre-norm captures
the residual stream x, and a forward hook on the branch turns its output ``f`` into the
gate's delta (``expm1(s) * x + exp(-s) * f``), which the layer then adds to x. The gates
are registered on the layer as ``layer.residual_gates[site]``; pretrained keys are unchanged.

Layers are recognised by structure: per site, a norm and a branch module of the family's
names (:attr:`PreNormFamily.site_modules`). transformers' own classes and their subclasses
need only that; any other class (a renamed copy, a user's layer) must also pass the
family's *lookalike* rule, because names alone do not say where the residual is added.
Checked against transformers 5.24:

- GPT-2 ``GPT2Block``: ``ln_1 -> attn``, ``ln_2 -> mlp``, and with ``add_cross_attention``
  ``ln_cross_attn -> crossattention`` (the ``"cross_attention"`` site). Other classes:
  no child besides these six (GPT-Neo, GPTBigCode, ImageGPT and Decision Transformer blocks
  qualify; OpenAI GPT's ``Block`` has the names but is post-norm and is excluded).
- Llama ``LlamaDecoderLayer`` and the decoder layers whose forward is Llama's verbatim
  (Mistral, Qwen2, Qwen3, Gemma): ``input_layernorm -> self_attn``,
  ``post_attention_layernorm -> mlp``. Other classes: no norm among the layer's children
  besides these two (Gemma2/3's sandwich norms, for one, are excluded). A layer that scales
  or drops its branch output before the add (Granite's residual multiplier, Phi-3's
  residual dropout) applies that to the gate's delta: still the identity at init.
- ViT ``ViTLayer``: ``layernorm_before -> attention``, ``layernorm_after -> mlp``. ViT
  applies ``self.dropout`` after the branch, so dropout acts on the gate's delta (the
  whole residual update, like drop path); ViT's default ``hidden_dropout_prob`` is 0.
  Other classes: no child besides these four and ``dropout`` (DeiT, ViT-MAE, ViT-MSN,
  I-JEPA, AST, ViViT qualify).

A layer whose forward does not run its pre-norm before its branch (a post-norm layer that
slipped through) fails at its first forward with an error that says so.
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
    norm_children,
    norm_dim,
)
from vectorgate.patching import AddModule, Change, Family, GateBranchOutput, register_family

GATES_ATTR = "residual_gates"


class PreNormFamily(Family):
    """A pre-norm family: per site, the (norm, branch) attribute names on the layer.

    Class attributes:
        layer_classes: class names of the layers to gate. When set, the family matches
            exactly those classes (by name, as before structural matching; for a family of
            your own, as in the docs) and nothing else; when empty (the built-in families),
            layers are recognised by structure.
        site_modules: site -> (pre-norm name, branch name), for every site in :attr:`sites`.
        optional_sites: sites a layer may lack (e.g. ``"cross_attention"``).
        known_layers: (module, class name) of the library's own layer classes.
        allowed_children: for other classes, the only child names allowed (None: any).
        lookalikes: (module, class name) of classes that have the names but another forward.
        stack_targets: site -> dotted path (from the layer) of the branch's first projection,
            which reads the pre-norm's output (:attr:`Family.stack_targets`).
    """

    layer_classes: ClassVar[tuple[str, ...]] = ()
    site_modules: ClassVar[dict[str, tuple[str, str]]] = {}
    optional_sites: ClassVar[tuple[str, ...]] = ()
    known_layers: ClassVar[tuple[tuple[str, str], ...]] = ()
    allowed_children: ClassVar[frozenset[str] | None] = None
    lookalikes: ClassVar[tuple[tuple[str, str], ...]] = ()
    stack_targets: ClassVar[dict[str, str]] = {}
    skip_sites = ("mlp",)
    skip_branches: ClassVar[dict[str, str]] = {"mlp": "mlp"}
    gate_sources = ("x", "normed")

    def _site_present(self, layer: nn.Module, site: str) -> bool:
        norm, branch = self.site_modules[site]
        return is_norm(getattr(layer, norm, None)) and callable_module(getattr(layer, branch, None))

    def is_layer(self, module: nn.Module) -> bool:
        """Whether ``module`` has this family's structural signature (see :attr:`expects`)."""
        if not callable_module(module) or inherits(module, self.lookalikes):
            return False
        if not all(self._site_present(module, s) for s in self.sites if s not in self.optional_sites):
            return False
        if inherits(module, self.known_layers):
            return True
        # Another class: the lookalike rules. Its norms are exactly the pre-norms of its sites
        # (a norm elsewhere would mean a residual layout other than x + branch(norm(x))).
        if norm_children(module) != {self.site_modules[s][0] for s in self.layer_sites(module)}:
            return False
        return self.allowed_children is None or child_names(module) <= self.allowed_children

    @property
    def structural(self) -> bool:
        """Whether layers are recognised by structure (no :attr:`layer_classes` given)."""
        return not self.layer_classes

    def find_layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        if self.layer_classes:
            return self.layers_of_class(model, self.layer_classes)
        claimed = claimed_elsewhere(model)
        return find_outermost(model, lambda m: id(m) not in claimed and self.is_layer(m))

    def layer_sites(self, layer: nn.Module) -> tuple[str, ...]:
        """The sites of :attr:`sites` whose norm and branch ``layer`` has, in forward order."""
        return tuple(s for s in self.sites if self._site_present(layer, s))

    def site_dim(self, layer: nn.Module, site: str) -> int:
        if not self._site_present(layer, site):
            site = self.layer_sites(layer)[0]  # never gated (see changes); any valid width will do
        norm = getattr(layer, self.site_modules[site][0])
        dim = norm_dim(norm)
        if dim is None:
            raise ValueError(f"cannot tell the feature dimension of {type(norm).__name__} in {type(layer).__name__}")
        return dim

    def changes(self, layer: nn.Module, gates: dict[str, ResidualGate]) -> list[Change]:
        present = {s: g for s, g in gates.items() if self._site_present(layer, s)}  # absent sites: nothing to gate
        if not present:
            return []
        out: list[Change] = [AddModule(layer, GATES_ATTR, nn.ModuleDict(present))]
        for site, gate in present.items():
            norm_name, branch_name = self.site_modules[site]
            out.append(GateBranchOutput(getattr(layer, branch_name), gate, capture=getattr(layer, norm_name)))
        return out



def _tf(model: str, *classes: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"transformers.models.{model}.modeling_{model}", c) for c in classes)


@register_family
class GPT2Family(PreNormFamily):
    name = "gpt2"
    description = "GPT-2 (GPT2Block) and blocks built like it (GPT-Neo, GPTBigCode, ImageGPT)"
    expects = (
        "a block with norms `ln_1`, `ln_2` and modules `attn`, `mlp` (x + attn(ln_1(x)), then "
        "x + mlp(ln_2(x))), optionally `ln_cross_attn` + `crossattention`, and no other child"
    )
    sites = ("attention", "cross_attention", "mlp")
    optional_sites = ("cross_attention",)
    site_modules: ClassVar[dict[str, tuple[str, str]]] = {
        "attention": ("ln_1", "attn"), "cross_attention": ("ln_cross_attn", "crossattention"), "mlp": ("ln_2", "mlp"),
    }
    known_layers = _tf("gpt2", "GPT2Block")
    allowed_children = frozenset({"ln_1", "attn", "ln_2", "mlp", "ln_cross_attn", "crossattention"})
    lookalikes = _tf("openai", "Block")  # OpenAI GPT: the same names, post-norm
    stack_targets: ClassVar[dict[str, str]] = {
        "attention": "attn.c_attn", "cross_attention": "crossattention.q_attn", "mlp": "mlp.c_fc",
    }


@register_family
class LlamaFamily(PreNormFamily):
    name = "llama"
    description = "Llama, Mistral, Qwen2, Qwen3, Gemma and other decoder layers with Llama's forward"
    expects = (
        "a layer with modules `self_attn`, `mlp` and norms `input_layernorm`, "
        "`post_attention_layernorm` (x + self_attn(input_layernorm(x)), then "
        "x + mlp(post_attention_layernorm(x))), and no other norm among its children"
    )
    site_modules: ClassVar[dict[str, tuple[str, str]]] = {
        "attention": ("input_layernorm", "self_attn"), "mlp": ("post_attention_layernorm", "mlp"),
    }
    known_layers = (
        _tf("llama", "LlamaDecoderLayer") + _tf("mistral", "MistralDecoderLayer") + _tf("qwen2", "Qwen2DecoderLayer")
        + _tf("qwen3", "Qwen3DecoderLayer") + _tf("gemma", "GemmaDecoderLayer")
    )
    stack_targets: ClassVar[dict[str, str]] = {"attention": "self_attn.q_proj", "mlp": "mlp.gate_proj"}


@register_family
class ViTFamily(PreNormFamily):
    name = "vit"
    description = "Hugging Face ViT (ViTLayer) and its copies (DeiT, ViT-MAE, ...)"
    expects = (
        "a layer with norms `layernorm_before`, `layernorm_after` and modules `attention`, `mlp` "
        "(x + attention(layernorm_before(x)), then x + mlp(layernorm_after(x))), and no other "
        "child but `dropout`"
    )
    site_modules: ClassVar[dict[str, tuple[str, str]]] = {
        "attention": ("layernorm_before", "attention"), "mlp": ("layernorm_after", "mlp"),
    }
    known_layers = _tf("vit", "ViTLayer")
    stack_targets: ClassVar[dict[str, str]] = {"attention": "attention.q_proj", "mlp": "mlp.fc1"}
    allowed_children = frozenset({"layernorm_before", "attention", "layernorm_after", "mlp", "dropout"})
