"""Gated drop-ins for the post-LN output modules of BERT-like encoders.

transformers' ``BertSelfOutput`` (attention residual) and ``BertOutput`` (FFN residual)
compute ``LayerNorm(dropout(dense(h)) + input_tensor)``; the gated versions compute
``LayerNorm(alpha * input_tensor + beta * dropout(dense(h)))`` with the gate reading the
residual input. RoBERTa, ELECTRA, XLM-R and CamemBERT use the same modules under other
names, so these fit them too.

Opt-in, :func:`stack_gate_projections` merges each gate's first projection into the GEMM of
the branch's first projection that reads the same tensor (see its docstring).

Two constructors:

- ``GatedBertOutput.from_module(layer.output)`` keeps the pretrained ``dense``,
  ``dropout`` and ``LayerNorm`` (the same module objects, no copy). Use this one on a
  pretrained model.
- ``GatedBertOutput(config)`` builds fresh ones from the config, like ``BertOutput(config)``:
  dropping it into a pretrained model replaces the pretrained dense/LayerNorm weights by
  random ones (fine for training from scratch, wrong for fine-tuning).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.gate import LowRankProjection, VectorGate
from vectorgate.patching import Change, ReplaceModule, patch_state
from vectorgate.variants import build_gate

__all__ = ["GatedBertOutput", "GatedBertSelfOutput", "stack_gate_projections"]


class _GatedPostLNOutput(nn.Module):
    """``LayerNorm(gate.residual(input_tensor, dropout(dense(hidden_states))))``.

    Submodule names (``dense``, ``LayerNorm``, ``dropout``) are transformers' own, so the
    state-dict keys of the pretrained weights do not change; the gate adds ``gate.*`` keys.
    """

    dense: nn.Linear
    LayerNorm: nn.Module
    dropout: nn.Module
    gate: ResidualGate

    def _set_parts(self, dense: nn.Linear, layer_norm: nn.Module, dropout: nn.Module, gate: ResidualGate) -> None:
        if gate.dim != dense.out_features:
            raise ValueError(
                f"the gate's dim must equal dense.out_features = {dense.out_features}, got {gate.dim}"
            )
        self.dense = dense
        self.LayerNorm = layer_norm
        self.dropout = dropout
        self.gate = gate

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        *,
        gate: ResidualGate | None = None,
        variant: str = "vectorgate",
        **gate_kwargs: Any,
    ):
        """A gated copy of a transformers output module that *shares* its submodules.

        Args:
            module: a ``BertSelfOutput``/``BertOutput`` (or RoBERTa/ELECTRA/... equivalent):
                anything with ``dense`` (nn.Linear), ``LayerNorm`` and ``dropout``.
            gate: the gate to use; by default ``build_gate(variant, hidden_size,
                **gate_kwargs)`` on the dense layer's device and dtype.
            variant: residual variant name (see :func:`vectorgate.variants.build_gate`).
            **gate_kwargs: passed to the gate.

        Returns:
            The gated module; the original keeps working but shares its weights with it.
        """
        missing = [a for a in ("dense", "LayerNorm", "dropout") if not isinstance(getattr(module, a, None), nn.Module)]
        if missing or not isinstance(module.dense, nn.Linear):
            raise TypeError(
                f"{cls.__name__}.from_module expects a BertOutput-like module with an nn.Linear `dense`, "
                f"a `LayerNorm` and a `dropout`; {type(module).__name__} lacks {missing or ['an nn.Linear dense']}"
            )
        if gate is None:
            w = module.dense.weight
            gate = build_gate(variant, module.dense.out_features, **gate_kwargs).to(device=w.device, dtype=w.dtype)
        elif gate_kwargs or variant != "vectorgate":
            raise ValueError("pass either gate= or variant/gate kwargs, not both")
        obj = cls.__new__(cls)
        nn.Module.__init__(obj)
        obj._set_parts(module.dense, module.LayerNorm, module.dropout, gate)
        return obj

    def _init_from_config(self, config: Any, in_features: int, variant: str, gate_kwargs: dict[str, Any]) -> None:
        nn.Module.__init__(self)
        hidden = config.hidden_size
        self._set_parts(
            nn.Linear(in_features, hidden),
            nn.LayerNorm(hidden, eps=config.layer_norm_eps),
            nn.Dropout(config.hidden_dropout_prob),
            build_gate(variant, hidden, **gate_kwargs),
        )

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        """Same signature as transformers' module.

        Args:
            hidden_states: branch activations, ``(batch, seq, in_features)``.
            input_tensor: the residual input x, ``(batch, seq, hidden_size)``.

        Returns:
            ``(batch, seq, hidden_size)``.
        """
        f_x = self.dropout(self.dense(hidden_states))
        link: _GateLink | None = getattr(self, "_stacked", None)  # set by stack_gate_projections
        z = None if link is None else link.take(input_tensor)
        if z is None:  # the usual path; other gate variants take no z
            return self.LayerNorm(self.gate.residual(input_tensor, f_x))
        return self.LayerNorm(self.gate.residual(input_tensor, f_x, z))


class GatedBertSelfOutput(_GatedPostLNOutput):
    """Drop-in for ``BertSelfOutput`` (the attention residual), gated.

    Args:
        config: a ``BertConfig``-like config (``hidden_size``, ``layer_norm_eps``,
            ``hidden_dropout_prob``).
        variant: residual variant name.
        **gate_kwargs: passed to the gate (``init_curvature``, ``rank``, ...).

    Shapes:
        ``forward(hidden_states (B, T, H), input_tensor (B, T, H)) -> (B, T, H)``.
    """

    def __init__(self, config: Any, *, variant: str = "vectorgate", **gate_kwargs: Any) -> None:
        self._init_from_config(config, config.hidden_size, variant, gate_kwargs)


class GatedBertOutput(_GatedPostLNOutput):
    """Drop-in for ``BertOutput`` (the feed-forward residual), gated.

    Args:
        config: a ``BertConfig``-like config (``hidden_size``, ``intermediate_size``,
            ``layer_norm_eps``, ``hidden_dropout_prob``).
        variant: residual variant name.
        **gate_kwargs: passed to the gate (``init_curvature``, ``rank``, ...).

    Shapes:
        ``forward(hidden_states (B, T, intermediate_size), input_tensor (B, T, H)) -> (B, T, H)``.
    """

    def __init__(self, config: Any, *, variant: str = "vectorgate", **gate_kwargs: Any) -> None:
        self._init_from_config(config, config.intermediate_size, variant, gate_kwargs)


# ----------------------------------------------------------------------------- stacking


class _GateLink:
    """Hands the gate's projection from the stacked GEMM to the output module that needs it.

    A plain object, not a module: nothing in it is registered, so no state-dict key changes.
    """

    def __init__(self, gate: VectorGate) -> None:
        self.gate = gate
        self.x: Tensor | None = None
        self.h: Tensor | None = None

    @property
    def first(self) -> nn.Linear:
        """The gate's first linear map: ``proj`` (full rank) or ``proj.down`` (low rank)."""
        proj = self.gate.proj
        return proj.down if isinstance(proj, LowRankProjection) else proj

    def put(self, x: Tensor, h: Tensor) -> None:
        self.x, self.h = x, h

    def take(self, x: Tensor) -> Tensor | None:
        """z = g(x) if the stacked GEMM computed it from this very ``x``, else None."""
        if self.x is not x or self.h is None:
            return None
        h, self.x, self.h = self.h, None, None  # hold nothing past the step
        proj = self.gate.proj
        return proj.up(h) if isinstance(proj, LowRankProjection) else h


class _StackedLinear(nn.Module):
    """The branch's first ``nn.Linear``, computing the gate's first projection in the same GEMM.

    ``weight`` and ``bias`` are the host layer's own Parameters (same objects, same keys); the
    gate's weights stay the gate's. They are concatenated at every forward
    (``[W_host; W_gate]``, a copy of both weights: small next to the GEMM at realistic token
    counts), multiplied once, and split: the host's part is returned, the gate's part is
    handed to the output module through the link.

    Shapes: ``x (..., in_features) -> (..., out_features)``; the gate part is ``(..., d)``
    (full rank) or ``(..., rank)`` (low rank). The outputs are views of one ``(..., out +
    d_gate)`` tensor (not contiguous), which every consumer here reads as it is.
    """

    def __init__(self, host: nn.Linear, link: _GateLink) -> None:
        super().__init__()
        self.in_features, self.out_features = host.in_features, host.out_features
        self.weight = host.weight
        self.bias = host.bias
        self.__dict__["_link"] = link  # not a submodule: the gate is registered where it lives

    def forward(self, x: Tensor) -> Tensor:
        gate = self._link.first
        weight = torch.cat([self.weight, gate.weight.to(self.weight.dtype)])
        bias = None
        if self.bias is not None or gate.bias is not None:
            host_b = self.bias if self.bias is not None else self.weight.new_zeros(self.out_features)
            gate_b = gate.bias if gate.bias is not None else self.weight.new_zeros(gate.out_features)
            bias = torch.cat([host_b, gate_b.to(host_b.dtype)])
        out = F.linear(x, weight, bias)
        host_out, gate_out = out.split([self.out_features, gate.out_features], dim=-1)
        self._link.put(x, gate_out)
        return host_out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, stacked with the gate"


class _SetLink(Change):
    """Attach (and on revert, detach) the link an output module reads its z from."""

    def __init__(self, module: nn.Module, link: _GateLink) -> None:
        self.module, self.link = module, link

    def apply(self) -> None:
        self.module.__dict__["_stacked"] = self.link

    def revert(self) -> None:
        self.module.__dict__.pop("_stacked", None)


def stack_gate_projections(model: nn.Module) -> int:
    """Compute each gate's projection in one GEMM with the branch projection that reads its x.

    In a BERT-like post-LN layer the attention sub-layer's input feeds both Q/K/V and the
    attention gate, and the FFN's input feeds both the intermediate dense and the FFN gate.
    After this call, ``attention.self.query`` multiplies by ``[W_q; W_gate]`` and
    ``intermediate.dense`` by ``[W_intermediate; W_gate]`` (for a low-rank gate, its ``down``
    matrix), and the gated output modules take ``z`` from there: one larger GEMM instead of
    two, same result up to float rounding (the GEMM may block the sum differently, so not
    bit for bit: which is why this is opt-in and :func:`vectorgate.patch` does not do it).

    Parameter names, gate files (:func:`vectorgate.save_gates`/``load_gates``) and the
    optimizer's view of the parameters do not change: the weights are concatenated at
    forward time. :func:`vectorgate.unpatch` undoes this too.

    Args:
        model: a model patched by :func:`vectorgate.patch` with the ``bert`` family and
            :class:`vectorgate.VectorGate` gates (any rank).

    Returns:
        How many gate projections were stacked (0 if none could be: other families or gate
        variants are left as they are).

    Raises:
        ValueError: the model is not patched, or is stacked already.
    """
    state = patch_state(model)
    if state is None:
        raise ValueError(f"{type(model).__name__} is not patched by vectorgate; call vectorgate.patch first")
    if any(isinstance(m, _StackedLinear) for m in model.modules()):
        raise ValueError("the gate projections of this model are stacked already")
    changes: list[Change] = []
    for module in model.modules():
        host_parent, host_name, out = _stack_site(module)
        if out is None:
            continue
        link = _GateLink(out.gate)
        host = getattr(host_parent, host_name)
        changes += [ReplaceModule(host_parent, host_name, _StackedLinear(host, link)), _SetLink(out, link)]
    for change in changes:
        change.apply()
    state.changes.extend(changes)  # unpatch reverts them first (it walks the list backwards)
    return len(changes) // 2


def _stack_site(layer: nn.Module) -> tuple[nn.Module | None, str, _GatedPostLNOutput | None]:
    """(parent, name, gated output) for the two stackable sites of a BERT layer, one at a time.

    Called on every module: a ``BertAttention``-like module (``self.query`` + gated
    ``output``) gives its attention site, a ``BertLayer``-like module (``intermediate.dense``
    + gated ``output``) its FFN site.
    """
    out = getattr(layer, "output", None)
    if not isinstance(out, _GatedPostLNOutput) or not isinstance(out.gate, VectorGate):
        return None, "", None
    query_parent = getattr(layer, "self", None)
    if isinstance(out, GatedBertSelfOutput) and isinstance(getattr(query_parent, "query", None), nn.Linear):
        return query_parent, "query", out
    inter = getattr(layer, "intermediate", None)
    if isinstance(out, GatedBertOutput) and isinstance(getattr(inter, "dense", None), nn.Linear):
        return inter, "dense", out
    return None, "", None
