"""Stack each gate's projection into one GEMM with the branch projection that reads its input.

A gate computes ``z = g(u)`` from the tensor it reads (u), and the branch's first projection
(Q/K/V, the FFN's first dense) often reads the very same u: in BERT-like post-LN layers u is
the sub-layer's input x; in pre-norm layers patched with ``gate_source="normed"`` it is the
pre-norm's output. :func:`stack_gate_projections` replaces that branch projection by a
:class:`StackedProjection` that multiplies by ``[W_branch; W_gate]`` once and hands the gate's
part to the gate through a :class:`GateLink`: one larger GEMM instead of two.

The weights are concatenated at forward time, so parameter names, gate files and the
optimizer's view of the parameters do not change, and :func:`vectorgate.unpatch` undoes it.
Results equal the unstacked model's up to float rounding (the GEMM may block its sums
differently), which is why it is opt-in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import vectorgate.patching.state as model_edits
from vectorgate.gate import LowRankProjection, VectorGate
from vectorgate.patching.changes import Change, ReplaceModule, SetAttribute
from vectorgate.patching.core import patch_state
from vectorgate.patching.families import FAMILIES, Family
from vectorgate.patching.gate_site import GateSite

__all__ = [
    "UNSTACK_BEFORE_SKIPPING",
    "GateLink",
    "StackedProjection",
    "is_stackable",
    "stack_gate_projections",
    "stack_site",
]

#: The error token skipping raises on a stacked site (it runs the branch on some rows only).
UNSTACK_BEFORE_SKIPPING = ("token skipping needs unstacked gate projections: undo stack_gate_projections "
                           "(vectorgate.unpatch and patch again) before enable_skipping")


class GateLink:
    """Hands the gate's projection from the stacked GEMM to the code that applies the gate.

    A plain object, not a module: nothing in it is registered, so no state-dict key changes.
    """

    def __init__(self, gate: VectorGate) -> None:
        self.gate = gate
        self.u: Tensor | None = None
        self.h: Tensor | None = None

    @property
    def first(self) -> nn.Linear:
        """The gate's first linear map: ``proj`` (full rank) or ``proj.down`` (low rank)."""
        proj = self.gate.proj
        return proj.down if isinstance(proj, LowRankProjection) else proj

    def put(self, u: Tensor, h: Tensor) -> None:
        """Hold the gate's part ``h`` of the stacked GEMM of input ``u`` until :meth:`take`."""
        self.u, self.h = u, h

    def take(self, u: Tensor) -> Tensor | None:
        """z = g(u) if the stacked GEMM computed it from this very ``u``, else None."""
        if self.u is not u or self.h is None:
            return None
        h, self.u, self.h = self.h, None, None  # hold nothing past the step
        proj = self.gate.proj
        return proj.up(h) if isinstance(proj, LowRankProjection) else h


def _is_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2): ``y = x @ W + b`` with ``W`` of shape ``(in, out)``."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(weight, Tensor) and weight.dim() == 2
            and getattr(module, "nf", None) == weight.shape[1])


def is_stackable(module: nn.Module | None) -> bool:
    """Whether :class:`StackedProjection` can host ``module``: an ``nn.Linear`` or a ``Conv1D``."""
    return isinstance(module, nn.Linear) or (module is not None and _is_conv1d(module))


class StackedProjection(nn.Module):
    """A branch's first projection, computing the gate's first projection in the same GEMM.

    ``weight`` and ``bias`` are the host layer's own Parameters (same objects, same keys); the
    gate's weights stay the gate's. They are concatenated at every forward (``[W_host;
    W_gate]``, a copy of both weights: small next to the GEMM at realistic token counts),
    multiplied once, and split: the host's part is returned, the gate's part goes to the link.

    Args:
        host: an ``nn.Linear`` or transformers' ``Conv1D`` (whose weight is stored transposed).
        link: where the gate's part goes.

    Shapes: ``x (..., in_features) -> (..., out_features)``; the gate part is ``(..., d)``
    (full rank) or ``(..., rank)`` (low rank). Both are views of one ``(..., out + d_gate)``
    tensor (not contiguous; splitting the last dimension into heads still works as a view).
    """

    def __init__(self, host: nn.Module, link: GateLink) -> None:
        super().__init__()
        if not is_stackable(host):
            raise TypeError(f"can only stack into an nn.Linear or a Conv1D, got {type(host).__name__}")
        self.transposed = _is_conv1d(host)
        rows, cols = host.weight.shape  # Linear: (out, in); Conv1D: (in, out)
        self.in_features, self.out_features = (rows, cols) if self.transposed else (cols, rows)
        if link.first.in_features != self.in_features:
            raise ValueError(f"the gate reads {link.first.in_features} features, {type(host).__name__} "
                             f"reads {self.in_features}: they do not read the same tensor")
        self.weight = host.weight
        self.bias = host.bias
        self.host_type = type(host).__name__
        self.link = link  # a plain object, not a submodule: the gate is registered where it lives

    def forward(self, x: Tensor) -> Tensor:
        """The host's output for ``x (..., in_features)``; the gate's part goes to the link."""
        gate = self.link.first
        host_w = self.weight.t() if self.transposed else self.weight
        weight = torch.cat([host_w, gate.weight.to(host_w.dtype)])
        bias = None
        if self.bias is not None or gate.bias is not None:
            host_b = self.bias if self.bias is not None else host_w.new_zeros(self.out_features)
            gate_b = gate.bias if gate.bias is not None else host_w.new_zeros(gate.out_features)
            bias = torch.cat([host_b, gate_b.to(host_b.dtype)])
        out = F.linear(x, weight, bias)
        host_out, gate_out = out.split([self.out_features, gate.out_features], dim=-1)
        self.link.put(x, gate_out)
        return host_out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"{self.host_type} stacked with the gate")


def stack_site(layer: nn.Module, target: str, site: GateSite, family: Family) -> list[Change]:
    """The two edits that stack one site: the branch projection at ``target`` becomes a
    :class:`StackedProjection` computing the gate's first projection too, and the site takes
    its z from the :class:`GateLink` between them.

    Args:
        layer: the gated layer.
        target: dotted path from ``layer`` to the branch's first projection
            (:attr:`Family.stack_targets`), which reads :attr:`Family.stack_reads`.
        site: the site's :class:`GateSite`.
        family: the layer's family.

    Returns:
        The two changes, or ``[]`` when the gate is not a :class:`VectorGate`.

    Raises:
        ValueError: the gate reads another tensor than the projection (a pre-norm site
            patched with ``gate_source="x"``), or ``target`` is not a projection that can be
            stacked.
    """
    if not isinstance(site.gate, VectorGate):
        return []
    if site.reads != family.stack_reads:
        raise ValueError(
            "this model's gates read x, which no branch projection reads in a pre-norm layer; patch "
            "with gate_source='normed' (the gate reads the pre-norm's output, like the branch) to stack"
            if family.stack_reads == "normed" else
            f"the gate of {site.name} reads {site.reads!r}, the branch projection {target} reads "
            f"{family.stack_reads!r}: they do not read the same tensor"
        )
    parent_path, _, name = target.rpartition(".")
    parent = layer.get_submodule(parent_path) if parent_path else layer
    host = getattr(parent, name, None)
    if not is_stackable(host):
        raise ValueError(
            f"cannot stack the gate into {type(layer).__name__}.{target}: expected an nn.Linear or Conv1D "
            f"there, found {type(host).__name__}"
        )
    link = GateLink(site.gate)
    return [ReplaceModule(parent, name, StackedProjection(host, link)), SetAttribute(site, "link", link)]


def stack_gate_projections(model: nn.Module) -> int:
    """Compute each gate's projection in one GEMM with the branch projection that reads its input.

    - BERT-like post-LN layers: ``attention.self.query`` multiplies by ``[W_q; W_gate]`` and
      ``intermediate.dense`` by ``[W_intermediate; W_gate]`` (cross-attention sites stay as
      they are).
    - Pre-norm layers patched with ``GateConfig(gate_source="normed")`` (GPT-2, Llama-like,
      HF ViT, timm ViT): the first projection of each branch (``c_attn`` / ``c_fc``,
      ``q_proj`` / ``gate_proj``, ``q_proj`` / ``fc1``, ``qkv`` / ``fc1``) takes the gate's.

    For a low-rank gate the stacked matrix is its ``down`` projection. Parameter names, gate
    files (:func:`vectorgate.save_gates` / ``load_gates``) and the optimizer's view of the
    parameters do not change. :func:`vectorgate.unpatch` undoes this too. Token skipping
    (:mod:`vectorgate.skip`) needs unstacked projections.

    Args:
        model: a model patched by :func:`vectorgate.patch` with :class:`vectorgate.VectorGate`
            gates (any rank).

    Returns:
        How many gate projections were stacked (>= 1).

    Raises:
        ValueError: the model is not patched, is stacked already, or nothing in it can be
            stacked (another gate variant, a family without stacking, pre-norm gates that
            read x).
    """
    state = patch_state(model)
    if state is None:
        raise ValueError(f"{type(model).__name__} is not patched by vectorgate; call vectorgate.patch first")
    edits = model_edits.model_state(model)
    if edits is not None and edits.find("stack") is not None:
        raise ValueError("the gate projections of this model are stacked already")
    if edits is not None and edits.find("skip") is not None:
        raise ValueError("token skipping is on: call vectorgate.skip.disable_skipping(model) before stacking")
    family = FAMILIES[state.family]
    changes: list[Change] = []
    for name in state.layer_names:
        layer = model.get_submodule(name)
        for site in family.layer_sites(layer):
            gate_site, target = state.gate_site(name, site), family.stack_targets.get(site)
            if site in state.sites and gate_site is not None and target is not None:
                changes += stack_site(layer, target, gate_site, family)
    count = sum(isinstance(c, ReplaceModule) and isinstance(c.new, StackedProjection) for c in changes)
    if not count:
        raise ValueError(
            f"nothing to stack in this {type(model).__name__} (family {family.name!r}, variant "
            f"{state.variant!r}): stacking needs VectorGate gates and a family that supports it"
        )
    model_edits.push(model, "stack", changes)  # unpatch undoes them before the gates
    return count
