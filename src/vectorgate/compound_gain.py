"""Compound gain: how much the gates together scale the residual stream.

Every gated site multiplies the residual stream by ``alpha = exp(s)`` per channel, so after
sites 1..k a channel of a token carries the factor ``exp(s_1 + ... + s_k)``: the *compound
gain* of the skip path. A stack of gates whose s agree in sign multiplies it up (32 sites at
|s| = 1 allow e^32); a healthy model keeps it near 1. :class:`CompoundGainMonitor` measures
it on the forward passes a model actually runs, beside the share of saturated gates
(``|tanh(g(x))| >= 0.95``, where g stops learning) and, after ``backward``, the gradient
norm of every gated layer::

    monitor = CompoundGainMonitor(model)
    with monitor:                        # hooks only inside the block
        loss = model(**batch).loss       # any forward: training or evaluation
        loss.backward()
        report = monitor.report()        # the last forward pass; one host sync
    report.max_gain, report.saturated, report.within_budget

    vectorgate.compound_gain(model, **batch)   # the same for one forward, in one call

The gates are taken in the order they run: a site is one gate call, and each call adds its s
to the running sum of the calls before it in the same forward pass (a model's forward pre-hook
starts a new pass). A call whose input has another shape than the running sum's (another
stream: an encoder's and a decoder's, or tokens a skip path dropped) starts a new stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vectorgate._hooks import HookedWatcher
from vectorgate.depth import DEFAULT_LOG_GAIN_BUDGET
from vectorgate.discovery import gates
from vectorgate.gate import VectorGate
from vectorgate.patching.stacking import StackedProjection
from vectorgate.recorder import SATURATION_THRESHOLD

__all__ = ["CompoundGainMonitor", "CompoundGainReport", "SiteGain", "compound_gain"]


@dataclass(frozen=True)
class SiteGain:
    """The compound gain after one gated site, over every token and channel of one forward.

    Attributes:
        name: the gate's qualified name in the model.
        depth: index of the site along its stream (0 for the first gate the stream meets).
        stream: index of the stream (0 unless calls of different shapes interleave).
        max_log_gain: ``max`` over tokens and channels of ``s_1 + ... + s_k``.
        min_log_gain: ``min`` of the same.
        max_abs_s: ``max |s|`` of this site alone.
        saturated: share of this site's values with ``|tanh(g(x))| >= threshold``.
    """

    name: str
    depth: int
    stream: int
    max_log_gain: float
    min_log_gain: float
    max_abs_s: float
    saturated: float

    @property
    def max_gain(self) -> float:
        """``exp(max_log_gain)``: the largest factor on a channel of the stream here."""
        return _exp(self.max_log_gain)

    @property
    def min_gain(self) -> float:
        """``exp(min_log_gain)``: the smallest factor on a channel of the stream here."""
        return _exp(self.min_log_gain)


@dataclass(frozen=True)
class CompoundGainReport:
    """The compound gain at every site of one forward pass, and the gated layers' gradients.

    Attributes:
        sites: one :class:`SiteGain` per gate call, in the order they ran.
        budget: the log-gain budget the report is judged against (``None``: no budget).
        grad_norms: gated layer name -> L2 norm of its parameters' gradients (empty
            when read without gradients).
    """

    sites: tuple[SiteGain, ...]
    budget: float | None = DEFAULT_LOG_GAIN_BUDGET
    grad_norms: Mapping[str, float] = field(default_factory=dict)

    @property
    def max_abs_log_gain(self) -> float:
        """``max |s_1 + ... + s_k|`` over every site, token and channel (0.0 without sites)."""
        return max((max(abs(s.max_log_gain), abs(s.min_log_gain)) for s in self.sites), default=0.0)

    @property
    def max_gain(self) -> float:
        """The largest compound gain on any channel at any site."""
        return _exp(max((s.max_log_gain for s in self.sites), default=0.0))

    @property
    def min_gain(self) -> float:
        """The smallest compound gain on any channel at any site."""
        return _exp(min((s.min_log_gain for s in self.sites), default=0.0))

    @property
    def saturated(self) -> float:
        """Mean over sites of the share of saturated gate values."""
        return sum(s.saturated for s in self.sites) / len(self.sites) if self.sites else 0.0

    @property
    def within_budget(self) -> bool:
        """Whether ``max_abs_log_gain`` is within :attr:`budget` (always True without one)."""
        return self.budget is None or self.max_abs_log_gain <= self.budget

    def by_depth(self) -> list[tuple[int, float, float]]:
        """``(depth, max_log_gain, min_log_gain)`` per depth, pooled over streams."""
        out: dict[int, tuple[float, float]] = {}
        for s in self.sites:
            hi, lo = out.get(s.depth, (-math.inf, math.inf))
            out[s.depth] = (max(hi, s.max_log_gain), min(lo, s.min_log_gain))
        return [(d, hi, lo) for d, (hi, lo) in sorted(out.items())]

    def scalars(self, prefix: str = "gates/") -> dict[str, float]:
        """Flat scalars for a logger (TensorBoard, W&B, the Trainer's log): the largest and
        smallest compound gain (log10), the largest ``|log gain|``, the saturated share and the
        largest gated layer's gradient norm."""
        out = {
            f"{prefix}compound_gain_max_log10": max((s.max_log_gain for s in self.sites), default=0.0) / math.log(10),
            f"{prefix}compound_gain_min_log10": min((s.min_log_gain for s in self.sites), default=0.0) / math.log(10),
            f"{prefix}max_abs_log_gain": self.max_abs_log_gain,
            f"{prefix}saturated": self.saturated,
        }
        if self.grad_norms:
            out[f"{prefix}max_layer_grad_norm"] = max(self.grad_norms.values())
        return out

    def summary(self) -> str:
        """One line a person reads: gains, saturation, budget."""
        if not self.sites:
            return "no gate ran"
        budget = "" if self.budget is None else (
            f", {'within' if self.within_budget else 'OUTSIDE'} the budget e^{self.budget:.3g}"
        )
        return (
            f"{len(self.sites)} gated sites: compound gain {self.min_gain:.3g} to {self.max_gain:.3g} "
            f"(max |log gain| {self.max_abs_log_gain:.3g}{budget}); {100 * self.saturated:.1f}% of gate "
            "values saturated"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite values as None)."""
        return {
            "budget": self.budget,
            "max_abs_log_gain": _finite(self.max_abs_log_gain),
            "saturated": self.saturated,
            "within_budget": self.within_budget,
            "grad_norms": {k: _finite(v) for k, v in self.grad_norms.items()},
            "sites": [
                {"name": s.name, "depth": s.depth, "stream": s.stream, "max_log_gain": _finite(s.max_log_gain),
                 "min_log_gain": _finite(s.min_log_gain), "max_abs_s": _finite(s.max_abs_s), "saturated": s.saturated}
                for s in self.sites
            ],
        }


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class CompoundGainMonitor(HookedWatcher):
    """Measures the compound gain of a model's gates on the forward passes it runs.

    Use it as a context manager (or :meth:`start` / :meth:`stop`); :meth:`report` reads the
    last forward pass. While it runs, each gate call costs a few elementwise passes over its
    input and no host sync; :meth:`report` syncs once.

    Args:
        model: any module holding :class:`~vectorgate.VectorGate` gates (patched models,
            ``GatedResidual`` stacks, timm ``GatedBlock`` models).
        budget: the log-gain budget reports are judged against; default: the one the
            depth-aware default keeps to (:data:`vectorgate.depth.DEFAULT_LOG_GAIN_BUDGET`).
        threshold: saturation threshold on ``|tanh(g(x))|``.

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: no VectorGate in ``model``, stacked gate projections (the gate's own
            projection never runs), or a threshold outside (0, 1].
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        budget: float | None = DEFAULT_LOG_GAIN_BUDGET,
        threshold: float = SATURATION_THRESHOLD,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        if budget is not None and not (isinstance(budget, int | float) and budget > 0 and math.isfinite(budget)):
            raise ValueError(f"budget must be None or a positive number (a log gain), got {budget!r}")
        if any(isinstance(m, StackedProjection) for m in model.modules()):
            raise ValueError(
                "CompoundGainMonitor reads z from each gate's own projection, which a model with stacked "
                "projections (stack_gate_projections) does not call; measure the unstacked model"
            )
        self.gates = {name or type(g).__name__: g for name, g in gates(model, VectorGate)}
        if not self.gates:
            raise ValueError(f"model {type(model).__name__} contains no VectorGate to measure")
        self.model = model
        self.budget = None if budget is None else float(budget)
        self.threshold = float(threshold)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._streams: list[Tensor] = []  # running sum of s per stream
        self._depths: list[int] = []  # sites seen so far per stream
        self._records: list[tuple[str, int, int, Tensor]] = []

    def _register(self) -> list[torch.utils.hooks.RemovableHandle]:
        """One hook on the model (a new pass begins), one on each gate's projection; after
        :meth:`stop` the last pass stays readable."""
        handles = [self.model.register_forward_pre_hook(lambda *_: self._new_pass())]
        return handles + [gate.proj.register_forward_hook(self._hook(name, gate)) for name, gate in self.gates.items()]

    def _new_pass(self) -> None:
        self._streams = []
        self._depths = []
        self._records = []

    def _hook(self, name: str, gate: VectorGate):
        def hook(_module: nn.Module, _inputs: Any, z: Tensor) -> None:
            with torch.no_grad():
                t = torch.tanh(z.detach().float())
                s = gate.effective_curvature().detach().float() * t
                stream = next((i for i, acc in enumerate(self._streams) if acc.shape == s.shape), None)
                if stream is None:
                    self._streams.append(torch.zeros_like(s))
                    self._depths.append(0)
                    stream = len(self._streams) - 1
                self._streams[stream] = acc = self._streams[stream] + s
                depth = self._depths[stream]
                self._depths[stream] += 1
                stats = torch.stack([
                    acc.amax() if acc.numel() else acc.new_zeros(()),
                    acc.amin() if acc.numel() else acc.new_zeros(()),
                    s.abs().amax() if s.numel() else s.new_zeros(()),
                    (t.abs() >= self.threshold).float().mean() if t.numel() else t.new_zeros(()),
                ])
                self._records.append((name, depth, stream, stats))

        return hook

    def report(self, *, grads: bool = True) -> CompoundGainReport:
        """The compound gain at every site of the last forward pass (one host sync).

        Args:
            grads: also give each gated layer's gradient norm (where gradients exist).
        """
        values = torch.stack([r[3] for r in self._records]).cpu().tolist() if self._records else []
        sites = tuple(
            SiteGain(name=name, depth=depth, stream=stream, max_log_gain=v[0], min_log_gain=v[1],
                     max_abs_s=v[2], saturated=v[3])
            for (name, depth, stream, _), v in zip(self._records, values, strict=True)
        )
        return CompoundGainReport(sites, self.budget, layer_grad_norms(self.model) if grads else {})


def _gated_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    from vectorgate.patching.core import patch_state

    state = patch_state(model)
    if state is not None:
        for name in state.layer_names:
            yield name, model.get_submodule(name)
        return
    parents: dict[str, None] = {}
    for name, _ in gates(model, VectorGate):
        parents[name.rpartition(".")[0]] = None
    for name in parents:
        yield name, model.get_submodule(name) if name else model


def layer_grad_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the gradients of each gated layer's parameters (layers without gradients
    are left out). A patched model's layers are the ones :func:`vectorgate.patch` gated;
    elsewhere, the module that holds each gate (e.g. a ``GatedResidual``). One host sync."""
    names, norms = [], []
    for name, layer in _gated_layers(model):
        grads = [p.grad.detach().float().norm() for p in layer.parameters() if p.grad is not None]
        if grads:
            names.append(name or type(model).__name__)
            norms.append(torch.stack(grads).norm())
    if not norms:
        return {}
    return dict(zip(names, torch.stack([n.to(norms[0].device) for n in norms]).cpu().tolist(), strict=True))


def compound_gain(model: nn.Module, *args: Any, budget: float | None = DEFAULT_LOG_GAIN_BUDGET, **kwargs: Any) -> CompoundGainReport:
    """Run ``model(*args, **kwargs)`` once without gradients and report its compound gain.

    Returns:
        The :class:`CompoundGainReport` of that forward pass (no gradient norms).
    """
    monitor = CompoundGainMonitor(model, budget=budget)
    with monitor, torch.no_grad():
        model(*args, **kwargs)
    return monitor.report(grads=False)
