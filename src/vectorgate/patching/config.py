"""``GateConfig``: what to gate and how, from the call to the file.

The same object is what :func:`vectorgate.patch` takes, what the patched model keeps
(:func:`vectorgate.patching.gate_config`), and what :func:`vectorgate.save_gates` writes
next to the weights, so a saved adapter re-creates its gates exactly::

    config = GateConfig(variant="vectorgate", rank=64)       # shortcut for gate_kwargs
    model = vectorgate.patch(model, config)
    vectorgate.patching.gate_config(model)   # GateConfig(..., family='bert', layers=(0, 1, ..., 5))
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vectorgate.depth import DEFAULT_LOG_GAIN_BUDGET

__all__ = ["GATE_SOURCES", "GateConfig"]

#: What a gate's projection can read (see :attr:`GateConfig.gate_source`).
GATE_SOURCES = ("x", "normed")
#: Fields added after 0.3.0 and their values for files written before them (a 0.4 file has no
#: depth budget: its gates load and behave as saved).
_ADDED_SINCE_0_3: dict[str, Any] = {"gate_source": "x", "log_gain_budget": None}


def _jsonable(key: str, value: Any) -> Any:
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value)
    except TypeError as err:
        raise TypeError(
            f"gate option {key}={value!r} cannot be stored in a GateConfig; options must be "
            "numbers, strings, booleans, None, lists or torch dtypes"
        ) from err
    return value


@dataclass
class GateConfig:
    """How :func:`vectorgate.patch` gates a model.

    Args:
        variant: residual variant by name (see :mod:`vectorgate.variants`), default ``"vectorgate"``.
        sites: which residual sites of each layer to gate (``"attention"``, ``"mlp"``,
            ``"cross_attention"``); None (default) gates every site each layer has.
        layers: indices of the layers to gate (negative counts from the end); None: all.
        family: force a model family by name (only needed when several recognise the model).
        gate_kwargs: arguments of the variant, e.g. ``{"rank": 64, "init_curvature": 0.5}``
            (see :class:`vectorgate.VectorGate`). ``device`` is not stored: gates are built on
            each layer's device, in its dtype unless ``dtype`` is given.
        modules_to_save: non-gate modules trained and saved with the gates (e.g. a new
            ``"classifier"`` head), set by :func:`vectorgate.make_gate_adapter`.
        gate_source: what the gate's projection reads. ``"x"`` (default): the residual stream
            x, the seed's ``s = c * tanh(g(x))``. ``"normed"``: in pre-norm layers
            (``x + f(norm(x))``: GPT-2, Llama-like, HF ViT, timm ViT), the pre-norm's output
            ``norm(x)``, the tensor the branch's first GEMM also reads, which lets
            :func:`vectorgate.patching.stack_gate_projections` compute both in one GEMM. A deviation
            from the seed's g(x): alpha and beta still multiply x and f(norm(x)). Post-LN
            families (BERT) have no pre-norm (their x is already a LayerNorm's output) and
            take ``"x"`` only. Measured effect on quality: docs/results_reading.md. (Not
            called ``gate_input``: that is GateSkip's own option, in ``gate_kwargs``.)
        log_gain_budget: bound on the log compound gain of the residual stream: ``patch()``
            counts the n sites it gates and caps every VectorGate's curvature at
            ``log_gain_budget / n`` (:mod:`vectorgate.depth`), so the gates together scale a
            channel of the stream by at most ``e^log_gain_budget`` at any depth. Default
            ``log(65504) ~ 11.09`` (float16's range); ``None``: no depth cap (vectorgate
            0.4's behaviour, and what gate files written by 0.4 load with). An explicit
            ``max_curvature`` in ``gate_kwargs`` takes precedence.

    Keyword arguments that are not fields go into ``gate_kwargs`` (``GateConfig(rank=64)``).

    Raises:
        ValueError / TypeError: a field of the wrong type, an empty or duplicate site list,
            an unknown variant, or an option that cannot be stored.
    """

    variant: str = "vectorgate"
    sites: tuple[str, ...] | None = None
    layers: tuple[int, ...] | None = None
    family: str | None = None
    gate_kwargs: dict[str, Any] = field(default_factory=dict)
    modules_to_save: tuple[str, ...] = ()
    gate_source: str = "x"
    log_gain_budget: float | None = DEFAULT_LOG_GAIN_BUDGET

    def __init__(
        self,
        variant: str = "vectorgate",
        sites: str | Sequence[str] | None = None,
        layers: int | Sequence[int] | None = None,
        family: str | None = None,
        gate_kwargs: Mapping[str, Any] | None = None,
        modules_to_save: str | Sequence[str] = (),
        gate_source: str = "x",
        log_gain_budget: float | None = DEFAULT_LOG_GAIN_BUDGET,
        **options: Any,
    ) -> None:
        self.variant = variant
        self.sites = sites  # type: ignore[assignment]  # normalised in __post_init__
        self.layers = layers  # type: ignore[assignment]
        self.family = family
        merged = dict(gate_kwargs or {})
        clash = sorted(set(merged) & set(options))
        if clash:
            raise TypeError(f"GateConfig got {clash} both in gate_kwargs and as keywords")
        merged.update(options)
        self.gate_kwargs = merged
        self.modules_to_save = modules_to_save  # type: ignore[assignment]
        self.gate_source = gate_source
        self.log_gain_budget = log_gain_budget
        self.__post_init__()

    def __post_init__(self) -> None:
        from vectorgate.variants import VARIANTS, unknown_variant_error

        if not isinstance(self.variant, str) or self.variant not in VARIANTS:
            raise unknown_variant_error(self.variant)
        if getattr(VARIANTS[self.variant], "expands_stream", False):
            raise ValueError(
                f"variant {self.variant!r} widens the residual stream to n copies, which vectorgate.patch() "
                "and GateConfig cannot describe: install it with vectorgate_lab.peers.hyper_connect (the lab)"
            )
        if self.sites is not None:
            sites = (self.sites,) if isinstance(self.sites, str) else tuple(self.sites)
            if not sites or not all(isinstance(s, str) for s in sites):
                raise ValueError(f"sites must be None or a non-empty subset of the family's sites, got {self.sites!r}")
            if len(set(sites)) != len(sites):
                raise ValueError(f"sites has duplicates: {sites}")
            self.sites = sites
        if self.layers is not None:
            layers = [self.layers] if isinstance(self.layers, int) and not isinstance(self.layers, bool) else self.layers
            try:
                layers = tuple(layers)
            except TypeError:
                raise TypeError(f"layers must be None, an int or a sequence of ints, got {self.layers!r}") from None
            for i in layers:
                if isinstance(i, bool) or not isinstance(i, int):
                    raise TypeError(f"layers must be ints (layer indices), got {i!r}")
            self.layers = layers
        if self.family is not None and not isinstance(self.family, str):
            raise TypeError(f"family must be None or a family name, got {self.family!r}")
        if not isinstance(self.gate_kwargs, Mapping):
            raise TypeError(f"gate_kwargs must be a mapping, got {type(self.gate_kwargs).__name__}")
        self.gate_kwargs = {k: v for k, v in self.gate_kwargs.items() if k != "device"}
        for key, value in self.gate_kwargs.items():
            _jsonable(key, value)
        modules = (self.modules_to_save,) if isinstance(self.modules_to_save, str) else tuple(self.modules_to_save)
        if not all(isinstance(m, str) and m for m in modules):
            raise TypeError(f"modules_to_save must be module names, got {self.modules_to_save!r}")
        self.modules_to_save = modules
        if self.gate_source not in GATE_SOURCES:
            raise ValueError(f"gate_source must be one of {GATE_SOURCES}, got {self.gate_source!r}")
        budget = self.log_gain_budget
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, int | float) or not (math.isfinite(budget) and budget > 0):
                raise ValueError(f"log_gain_budget must be None or a positive number (a natural-log gain), got {budget!r}")
            self.log_gain_budget = float(budget)

    def replace(self, **changes: Any) -> GateConfig:
        """A copy with ``changes`` applied (validated like a new config)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["gate_kwargs"] = dict(self.gate_kwargs)
        fields.update(changes)
        return GateConfig(**fields)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (dtypes as strings, tuples as lists)."""
        return {
            "variant": self.variant,
            "sites": None if self.sites is None else list(self.sites),
            "layers": None if self.layers is None else list(self.layers),
            "family": self.family,
            "gate_kwargs": {k: _jsonable(k, v) for k, v in self.gate_kwargs.items()},
            "modules_to_save": list(self.modules_to_save),
            "gate_source": self.gate_source,
            "log_gain_budget": self.log_gain_budget,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "the config") -> GateConfig:
        """Rebuild a config from :meth:`to_dict`'s output; every field must be present, except
        fields added since 0.3.0, which take their defaults (files written by older versions).

        Raises:
            ValueError: ``data`` lacks a field or has one GateConfig does not know.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{source} must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        data = {**_ADDED_SINCE_0_3, **data}
        unknown = sorted(set(data) - set(names))
        missing = [n for n in names if n not in data]
        if unknown or missing:
            raise ValueError(
                f"{source} does not match this vectorgate's GateConfig: unknown fields {unknown}, "
                f"missing fields {missing} (expected exactly {names})"
            )
        kwargs = dict(data["gate_kwargs"] or {})
        if isinstance(kwargs.get("dtype"), str):
            dtype = getattr(torch, kwargs["dtype"], None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"{source}: gate_kwargs.dtype {kwargs['dtype']!r} is not a torch dtype")
            kwargs["dtype"] = dtype
        return cls(**{**{n: data[n] for n in names}, "gate_kwargs": kwargs})
