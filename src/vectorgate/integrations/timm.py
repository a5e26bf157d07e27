"""timm Vision Transformers with gated residuals.

Two ways in, both built on timm's own ``Block`` (attention, MLP, LayerScale, drop path
and norm layers are timm's modules, configured by timm's arguments):

- **New models**: :class:`GatedBlock` is a ``block_fn`` for
  ``timm.models.vision_transformer.VisionTransformer``::

      vit = VisionTransformer(..., block_fn=gated_block_fn(init_curvature=0.0))

- **Existing models** (e.g. one you trained or loaded): :func:`patch_timm_vit` replaces
  every plain ``Block`` by a :class:`GatedBlock` that reuses the block's own submodules
  (weights kept, no copy) and adds two gates. At c = 0 the patched model's output is
  bit-for-bit the original's.

Inside a block timm computes ``x = x + drop_path(ls(branch(norm(x))))``. The gated block
keeps the host's ``x + ...`` and feeds it the gate's *delta*
(``VectorGate.residual_delta = expm1(s) * x + exp(-s) * f``), which is exactly ``f`` at
c = 0, so identity at init holds to the bit. Drop path is applied to the whole delta: a
dropped sample skips the block entirely (``y = x``), which is what stochastic depth means.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.variants import build_gate

try:
    from timm.models.vision_transformer import Block
except ImportError as err:  # pragma: no cover - exercised only without timm
    raise ImportError(
        "vectorgate.integrations.timm needs timm: `pip install vectorgate[timm]`"
    ) from err

__all__ = ["GatedBlock", "gated_block_fn", "patch_timm_vit"]


def _build_gate_pair(
    dim: int, gate: str, gate_kwargs: dict[str, Any] | None, device, dtype
) -> tuple[ResidualGate, ResidualGate]:
    kwargs = dict(gate_kwargs or {})
    # Only forward factory kwargs that were given, so a peer variant without them still builds.
    if device is not None:
        kwargs.setdefault("device", device)
    if dtype is not None:
        kwargs.setdefault("dtype", dtype)
    return build_gate(gate, dim, **kwargs), build_gate(gate, dim, **kwargs)


def _block_dim(block: Block) -> int:
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
        gate: name of the residual variant (see :func:`vectorgate.variants.build_gate`).
        gate_kwargs: keyword arguments for that variant (e.g. ``{"rank": 16,
            "init_curvature": 0.0}``).
        **block_kwargs: passed to ``timm.models.vision_transformer.Block``.

    Shapes:
        x ``(batch, tokens, dim)`` -> ``(batch, tokens, dim)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        gate: str = "vectorgate",
        gate_kwargs: dict[str, Any] | None = None,
        **block_kwargs: Any,
    ) -> None:
        super().__init__(dim, num_heads, **block_kwargs)
        self.gate1, self.gate2 = _build_gate_pair(
            dim, gate, gate_kwargs, block_kwargs.get("device"), block_kwargs.get("dtype")
        )

    @classmethod
    def from_block(
        cls, block: Block, *, gate: str = "vectorgate", **gate_kwargs: Any
    ) -> GatedBlock:
        """A GatedBlock that shares ``block``'s submodules (same weights, no copy) plus new gates.

        Args:
            block: a plain ``timm.models.vision_transformer.Block`` (not a subclass: those
                have their own ``forward``, which this class would silently replace).
            gate: name of the residual variant.
            **gate_kwargs: keyword arguments for that variant.

        Returns:
            The new block; the gates are created on the device and in the dtype of
            ``block``'s first parameter.
        """
        if type(block) is not Block:
            raise TypeError(
                "GatedBlock.from_block expects a timm.models.vision_transformer.Block, "
                f"got {type(block).__module__}.{type(block).__qualname__}"
            )
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        # Take over the block's plain attributes and children; fresh containers so that
        # adding the gates below leaves the original block untouched.
        for key, value in block.__dict__.items():
            if key not in ("_modules", "_parameters", "_buffers"):
                new.__dict__.setdefault(key, value)
        new._modules.update(block._modules)
        new._parameters.update(block._parameters)
        new._buffers.update(block._buffers)
        ref = next(block.parameters(), None)
        device = None if ref is None else ref.device
        dtype = None if ref is None else ref.dtype
        new.gate1, new.gate2 = _build_gate_pair(_block_dim(block), gate, gate_kwargs, device, dtype)
        return new

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


def gated_block_fn(gate: str = "vectorgate", **gate_kwargs: Any) -> Callable[..., GatedBlock]:
    """A ``block_fn`` for ``VisionTransformer`` that builds :class:`GatedBlock` with these gates.

    Example::

        vit = VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10,
                                embed_dim=64, depth=4, num_heads=4,
                                block_fn=gated_block_fn(rank=16))
    """
    return functools.partial(GatedBlock, gate=gate, gate_kwargs=gate_kwargs)


def patch_timm_vit(model: nn.Module, *, gate: str = "vectorgate", **gate_kwargs: Any) -> nn.Module:
    """Gate both residuals of every plain timm ``Block`` inside ``model``, in place.

    Each block is replaced on its parent by :meth:`GatedBlock.from_block`, which keeps the
    block's own modules and weights; the original state dict keys are unchanged and the
    gates add ``<block>.gate1.*`` / ``<block>.gate2.*``. At c = 0 (the default) the output
    is bit-for-bit unchanged.

    Args:
        model: a module containing ``timm.models.vision_transformer.Block`` instances
            (typically a ``VisionTransformer``).
        gate: name of the residual variant.
        **gate_kwargs: keyword arguments for that variant.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: if ``model`` holds no plain ``Block`` (nothing would be gated).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is Block and name  # the root itself cannot be replaced on a parent
    ]
    if not targets:
        found = sorted({type(m).__name__ for m in model.modules() if isinstance(m, Block)})
        hint = f" (found Block subclasses {found}, which have their own forward)" if found else ""
        raise ValueError(
            f"patch_timm_vit found no timm.models.vision_transformer.Block in "
            f"{type(model).__name__}{hint}"
        )
    for name, block in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, GatedBlock.from_block(block, gate=gate, **gate_kwargs))
    return model
