"""timm Vision Transformers with gated residuals.

Two ways in, both on timm's own ``Block`` (attention, MLP, LayerScale, drop path and norm
layers stay timm's modules, configured by timm's arguments):

- **New models**: :class:`GatedBlock` is a ``block_fn`` for
  ``timm.models.vision_transformer.VisionTransformer``::

      vit = VisionTransformer(..., block_fn=gated_block_fn())

- **Existing models** (one you trained or loaded): ``vectorgate.patch(vit)`` finds every
  plain ``Block`` through the :class:`TimmViTFamily` registered here and gates it in place
  (weights kept, reversible with ``vectorgate.unpatch``, ``save_gates``/``load_gates``
  work). At c = 0 the patched model's output is bit-for-bit the original's.

Both give the same parameter names (``blocks.<i>.gate1.*`` for attention, ``gate2.*`` for
the MLP), so gates trained one way load into a model built the other way.

Inside a block timm computes ``x = x + drop_path(ls(branch(norm(x))))``. The gated block
keeps the host's ``x + ...`` and hands it the gate's *delta*
(``residual_delta = expm1(s) * x + exp(-s) * f``), which is exactly ``f`` at c = 0, so
identity at init holds to the bit. Drop path acts on the whole delta: a dropped sample
skips the block entirely (``y = x``), which is what stochastic depth means.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from vectorgate._optional import require
from vectorgate.base import ResidualGate
from vectorgate.integrations._structure import (
    callable_module,
    child_names,
    claimed_elsewhere,
    find_outermost,
    is_norm,
)
from vectorgate.patching import (
    AddModule,
    Change,
    Family,
    GateBranchOutput,
    GateConfig,
    register_family,
)
from vectorgate.variants import build_gate

Block = require("timm.models.vision_transformer", extra="timm", needed_by="vectorgate.integrations.timm").Block

__all__ = ["GatedBlock", "TimmViTFamily", "gated_block_fn"]


def _build_gate_pair(
    dim: int, variant: str, gate_kwargs: dict[str, Any] | None, device, dtype
) -> tuple[ResidualGate, ResidualGate]:
    kwargs = dict(gate_kwargs or {})
    # Only forward factory kwargs that were given, so a peer variant without them still builds.
    if device is not None:
        kwargs.setdefault("device", device)
    if dtype is not None:
        kwargs.setdefault("dtype", dtype)
    return build_gate(variant, dim, **kwargs), build_gate(variant, dim, **kwargs)


def _block_dim(block: nn.Module) -> int:
    """The embedding dimension of a timm Block, read from its first norm layer or its MLP."""
    shape = getattr(block.norm1, "normalized_shape", None)
    if shape:
        return int(shape[-1])
    fc1 = getattr(block.mlp, "fc1", None)
    if isinstance(fc1, nn.Linear):
        return fc1.in_features
    raise ValueError(
        f"cannot tell the embedding dimension of this Block: norm1 is {type(block.norm1).__name__} "
        f"without normalized_shape and mlp is {type(block.mlp).__name__} without an fc1 Linear"
    )


class GatedBlock(Block):
    """timm's pre-norm ViT ``Block`` with both residuals gated.

    ``x = x + drop_path1(gate1.residual_delta(x, ls1(attn(norm1(x)))))`` and the same for the
    MLP with ``gate2``. Every argument of timm's ``Block`` is accepted and means what it
    means there (``init_values`` for LayerScale, ``drop_path``, ``norm_layer``,
    ``mlp_layer``, ``attn_layer``, ...).

    Args:
        dim: embedding dimension d.
        num_heads: attention heads.
        variant: name of the residual variant (see :func:`vectorgate.variants.build_gate`),
            as in ``vectorgate.patch(..., variant=...)``.
        gate_kwargs: keyword arguments for that variant (e.g. ``{"rank": 16,
            "init": "zero_output"}``).
        config: a :class:`vectorgate.GateConfig` instead of ``variant`` and ``gate_kwargs``
            (its variant and gate arguments apply; a block has both sites, whatever its
            ``sites`` say, and no layers; its gates read x, so ``gate_source="normed"`` is
            refused).
        **block_kwargs: passed to ``timm.models.vision_transformer.Block``.

    Attributes:
        gate_variant, gate_kwargs: what the gates were built with (recorded by
            :func:`vectorgate.save_gates`, so the gates load into a plain ViT patched alike).

    Shapes:
        x ``(batch, tokens, dim)`` -> ``(batch, tokens, dim)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        variant: str = "vectorgate",
        gate_kwargs: dict[str, Any] | None = None,
        config: GateConfig | None = None,
        **block_kwargs: Any,
    ) -> None:
        if config is not None:
            if variant != "vectorgate" or gate_kwargs:
                raise TypeError("GatedBlock takes a GateConfig or variant/gate_kwargs, not both")
            if config.gate_source != "x":
                raise ValueError(
                    f"GatedBlock's gates read the residual stream x; gate_source={config.gate_source!r} "
                    "is a patch() option: patch a plain timm ViT with this config instead"
                )
            variant, gate_kwargs = config.variant, config.gate_kwargs
        super().__init__(dim, num_heads, **block_kwargs)
        self.gate_variant, self.gate_kwargs = variant, dict(gate_kwargs or {})
        self.gate1, self.gate2 = _build_gate_pair(
            dim, variant, gate_kwargs, block_kwargs.get("device"), block_kwargs.get("dtype")
        )

    def init_weights(self) -> None:
        """Re-apply the gates' own init after timm's ``init_weights`` visited their Linears.

        timm's ViT init walks children first and re-initialises every ``nn.Linear`` (the
        gate's projection included); it then calls this method on the block, so the gates
        end up with the init they define (c = ``init_curvature``), not timm's.
        """
        for g in (self.gate1, self.gate2):
            reset = getattr(g, "reset_parameters", None)
            if callable(reset):
                reset()

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        """x ``(batch, tokens, dim)`` -> ``(batch, tokens, dim)``; arguments as in timm's Block."""
        f = self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal))
        x = x + self.drop_path1(self.gate1.residual_delta(x, f))
        f = self.ls2(self.mlp(self.norm2(x)))
        x = x + self.drop_path2(self.gate2.residual_delta(x, f))
        return x


def gated_block_fn(variant: str = "vectorgate", **gate_kwargs: Any) -> Callable[..., GatedBlock]:
    """A ``block_fn`` for ``VisionTransformer`` that builds :class:`GatedBlock` with these gates.

    A block does not know how many blocks the model has: pass ``depth=2 * n_blocks`` (two
    gated sites a block) for the depth-aware curvature cap that :func:`vectorgate.patch`
    applies by itself (:mod:`vectorgate.depth`); without it the gates are uncapped, as
    ``VectorGate(dim)`` is.

    Example::

        vit = VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10,
                                embed_dim=64, depth=4, num_heads=4,
                                block_fn=gated_block_fn(rank=16, depth=2 * 4))
    """
    return functools.partial(GatedBlock, variant=variant, gate_kwargs=gate_kwargs)


_BLOCK_CHILDREN = {"norm1": is_norm, "attn": callable_module, "ls1": callable_module, "drop_path1": callable_module,
                   "norm2": is_norm, "mlp": callable_module, "ls2": callable_module, "drop_path2": callable_module}


def is_timm_block(module: nn.Module) -> bool:
    """The structural signature of a timm ViT block (see :attr:`TimmViTFamily.expects`).

    ``Block`` itself and subclasses that keep ``Block.forward`` (not :class:`GatedBlock`,
    already gated). Other classes need exactly Block's eight children, which timm's
    ``RelPosBlock``, SAM's windowed ``Block`` and GC ViT's block have; ``ResPostBlock``
    (post-norm, no LayerScale) and blocks with extra parts (``HieraBlock``'s ``proj``) do not.
    """
    if isinstance(module, Block):
        return type(module).forward is Block.forward
    return (
        child_names(module) == set(_BLOCK_CHILDREN)
        and callable_module(module)
        and all(check(getattr(module, name)) for name, check in _BLOCK_CHILDREN.items())
    )


#: site -> (norm, layer scale, gate attribute) of a timm Block, in forward order.
_SITES: dict[str, tuple[str, str, str]] = {
    "attention": ("norm1", "ls1", "gate1"),
    "mlp": ("norm2", "ls2", "gate2"),
}


@register_family
class TimmViTFamily(Family):
    """``vectorgate.patch()`` support for timm ViTs: every plain ``vision_transformer.Block``.

    Per site, a forward pre-hook on the block's norm (``norm1``/``norm2``) captures the
    residual stream x and a forward hook on its LayerScale (``ls1``/``ls2``, an
    ``nn.Identity`` without ``init_values``) returns the gate's delta instead, so the
    block's own drop path and ``x + ...`` run unchanged, exactly as in :class:`GatedBlock`.
    The gates become ``block.gate1`` / ``block.gate2``. Blocks are recognised by structure
    (:func:`is_timm_block`); ``ResPostBlock``, ``ParallelScalingBlock`` and the like have
    other forwards and are not matched.
    """

    name = "timm_vit"
    description = "timm Vision Transformers (timm.models.vision_transformer.Block and blocks built like it)"
    expects = (
        "timm's vision_transformer.Block or a subclass that keeps its forward, or a block whose "
        "children are exactly norms `norm1`, `norm2` and modules `attn`, `ls1`, `drop_path1`, "
        "`mlp`, `ls2`, `drop_path2` (x + drop_path1(ls1(attn(norm1(x)))), then the same for the MLP)"
    )
    sites = ("attention", "mlp")
    skip_sites = ("mlp",)
    # The MLP runs on the kept tokens; the hook on ls2 (LayerScale maps 0 to 0) makes the delta.
    skip_branches: ClassVar[dict[str, str]] = {"mlp": "mlp"}
    gate_sources = ("x", "normed")
    # With gate_source="normed" the gate reads norm1/norm2's output, as attn.qkv / mlp.fc1 do.
    stack_targets: ClassVar[dict[str, str]] = {"attention": "attn.qkv", "mlp": "mlp.fc1"}

    structural = True

    def find_layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        claimed = claimed_elsewhere(model)
        return find_outermost(model, lambda m: id(m) not in claimed and is_timm_block(m))

    def all_layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The plain blocks :meth:`find_layers` finds and the :class:`GatedBlock` ones, in order."""
        claimed = claimed_elsewhere(model)
        return find_outermost(model, lambda m: isinstance(m, GatedBlock) or (id(m) not in claimed and is_timm_block(m)))

    def built_in_config(self, layer: nn.Module) -> GateConfig | None:
        """A :class:`GatedBlock`'s variant and gate arguments, both sites; None for a plain block.

        ``log_gain_budget=None``: a block builds its gates with its own arguments only (no
        depth cap unless they name ``depth``), and a plain ViT patched with this config
        gets the same gates."""
        if not isinstance(layer, GatedBlock):
            return None
        return GateConfig(variant=layer.gate_variant, gate_kwargs=layer.gate_kwargs, sites=self.sites,
                          log_gain_budget=None)

    def site_dim(self, layer: nn.Module, site: str) -> int:
        return _block_dim(layer)

    def changes(self, layer: nn.Module, gates: dict[str, ResidualGate]) -> list[Change]:
        out: list[Change] = []
        for site, gate in gates.items():
            norm, scale, attr = _SITES[site]
            out.append(AddModule(layer, attr, gate))
            out.append(GateBranchOutput(getattr(layer, scale), gate, capture=getattr(layer, norm)))
        return out

