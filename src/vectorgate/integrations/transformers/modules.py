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

from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.patching.gate_site import GateSite
from vectorgate.patching.stacking import stack_gate_projections
from vectorgate.variants import DEPTH_AWARE_VARIANTS, build_gate

# stack_gate_projections lives in vectorgate.patching.stacking; importable from here as before.
__all__ = ["GatedBertOutput", "GatedBertSelfOutput", "stack_gate_projections"]


def with_config_depth(config: Any, variant: str, gate_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``gate_kwargs`` with ``depth`` taken from a BERT-like config, as :func:`vectorgate.patch`
    would count it: every residual of every layer gated (2 a layer, 3 with cross-attention).

    So a model built from these drop-ins keeps the compound gain of its gates within the
    budget (:mod:`vectorgate.depth`) like a patched one. Left as given when the variant takes
    no depth, or the caller set ``depth`` or ``max_curvature`` (``depth=None``: 0.5's uncapped
    gates, e.g. to load a checkpoint of such a model saved by 0.5); a model that gates fewer
    sites gets a cap a little tighter than it needs, never a looser one.
    """
    if variant not in DEPTH_AWARE_VARIANTS or "depth" in gate_kwargs or "max_curvature" in gate_kwargs:
        return gate_kwargs
    layers = getattr(config, "num_hidden_layers", None)
    if not isinstance(layers, int) or layers < 1:
        return gate_kwargs
    per_layer = 3 if getattr(config, "add_cross_attention", False) else 2
    return {**gate_kwargs, "depth": per_layer * layers}


class _GatedPostLNOutput(nn.Module):
    """``LayerNorm(gate.residual(input_tensor, dropout(dense(hidden_states))))``.

    Submodule names (``dense``, ``LayerNorm``, ``dropout``) are transformers' own, so the
    state-dict keys of the pretrained weights do not change; the gate adds ``gate.*`` keys.
    ``site`` (:class:`~vectorgate.patching.gate_site.GateSite`) applies the gate.
    """

    dense: nn.Linear
    LayerNorm: nn.Module
    dropout: nn.Module
    gate: ResidualGate
    site: GateSite

    def _set_parts(self, dense: nn.Linear, layer_norm: nn.Module, dropout: nn.Module, gate: ResidualGate) -> None:
        if gate.dim != dense.out_features:
            raise ValueError(
                f"the gate's dim must equal dense.out_features = {dense.out_features}, got {gate.dim}"
            )
        self.dense, self.LayerNorm, self.dropout, self.gate = dense, layer_norm, dropout, gate
        self.site = GateSite(gate)

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
            # The dense layer's device, and its dtype unless the caller asked for another.
            factory = {"device": w.device, **({} if "dtype" in gate_kwargs else {"dtype": w.dtype})}
            gate = build_gate(variant, module.dense.out_features, **gate_kwargs).to(**factory)
        elif gate_kwargs or variant != "vectorgate":
            raise ValueError("pass either gate= or variant/gate kwargs, not both")
        obj = cls.__new__(cls)
        nn.Module.__init__(obj)
        obj._set_parts(module.dense, module.LayerNorm, module.dropout, gate)
        return obj

    def _init_from_config(self, config: Any, in_features: int, variant: str, gate_kwargs: dict[str, Any]) -> None:
        nn.Module.__init__(self)
        hidden = config.hidden_size
        gate_kwargs = with_config_depth(config, variant, gate_kwargs)
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
        return self.LayerNorm(self.site.residual(input_tensor, f_x))


class GatedBertSelfOutput(_GatedPostLNOutput):
    """Drop-in for ``BertSelfOutput`` (the attention residual), gated.

    Args:
        config: a ``BertConfig``-like config (``hidden_size``, ``layer_norm_eps``,
            ``hidden_dropout_prob``, ``num_hidden_layers``).
        variant: residual variant name.
        **gate_kwargs: passed to the gate (``init_curvature``, ``rank``, ...). Unless they
            name ``depth`` or ``max_curvature``, a VectorGate gets ``depth`` = the number of
            residuals in the config's model (:func:`with_config_depth`), as ``patch()`` does.

    Shapes:
        ``forward(hidden_states (B, T, H), input_tensor (B, T, H)) -> (B, T, H)``.
    """

    def __init__(self, config: Any, *, variant: str = "vectorgate", **gate_kwargs: Any) -> None:
        self._init_from_config(config, config.hidden_size, variant, gate_kwargs)


class GatedBertOutput(_GatedPostLNOutput):
    """Drop-in for ``BertOutput`` (the feed-forward residual), gated.

    Args:
        config: a ``BertConfig``-like config (``hidden_size``, ``intermediate_size``,
            ``layer_norm_eps``, ``hidden_dropout_prob``, ``num_hidden_layers``).
        variant: residual variant name.
        **gate_kwargs: passed to the gate (``init_curvature``, ``rank``, ...). Unless they
            name ``depth`` or ``max_curvature``, a VectorGate gets ``depth`` = the number of
            residuals in the config's model (:func:`with_config_depth`), as ``patch()`` does.

    Shapes:
        ``forward(hidden_states (B, T, intermediate_size), input_tensor (B, T, H)) -> (B, T, H)``.
    """

    def __init__(self, config: Any, *, variant: str = "vectorgate", **gate_kwargs: Any) -> None:
        self._init_from_config(config, config.intermediate_size, variant, gate_kwargs)
