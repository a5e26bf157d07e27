"""Record what the gates of a model do: streaming statistics of s, alpha and beta.

    rec = GateRecorder(model)
    with rec:                                   # hooks exist only inside the block
        for batch in loader:
            with rec.masked(batch["attention_mask"]):   # padding tokens are not counted
                model(**batch)
    print(rec.summary())                        # one row per gate
    rec.to_json("gates.json")                   # per gate and per dimension

How a gate is observed: a :class:`~vectorgate.gate.VectorGate` computes ``z = proj(x)`` and
everything else follows from z and the curvature (``s = c * tanh(z)``). A forward hook on
``gate.proj`` therefore sees every call of every gate, whatever calls it (GatedResidual,
patched Hugging Face modules, timm blocks), without touching the hot path; when the recorder
is not running no hook is registered at all. Residual variants without a ``proj`` (ReZero,
LayerScale, ...) are not recorded; they are listed in :attr:`GateRecorder.skipped`.

Memory is independent of the amount of data: per gate and per dimension the recorder keeps
a count, a running mean and sum of squared deviations (Chan et al.'s parallel update, in
float64), min, max, the sums of alpha and beta, and a saturation count; per gate, one
81-bin histogram of s. Recording costs one host sync per gate call (to read ``max |c|`` for
the histogram's range).
"""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vectorgate._hooks import HookedWatcher
from vectorgate.discovery import gates
from vectorgate.gate import VectorGate
from vectorgate.patching.stacking import StackedProjection

__all__ = [
    "HIST_BINS",
    "SATURATION_THRESHOLD",
    "GateRecorder",
    "GateStats",
    "short_names",
]

SATURATION_THRESHOLD = 0.95
"""A value counts as saturated when ``|tanh(g(x))| >= SATURATION_THRESHOLD``.

Equivalently ``|s| >= 0.95 * |c|``: the gate sits within 5% of its bound, where tanh is
flat and g gets almost no gradient. Stated on ``tanh(g(x))`` so that it stays meaningful at
``c = 0`` (where it says how often g *would* saturate once c moves).
"""

HIST_BINS = 81
"""Bins of the per-gate histogram of s. Odd, so that 0 is a bin centre, and a power of 3,
so that the range can be tripled by merging bins in threes, exactly, when |c| grows."""


@dataclass(frozen=True)
class GateStats:
    """What one gate did over everything recorded. Per-dimension fields have shape ``(d,)``.

    Attributes:
        name: qualified name of the gate in the model (``named_modules()``).
        dim: feature dimension d.
        calls: number of forward calls recorded.
        count: ``(d,)`` number of values counted per dimension (unmasked, finite tokens).
        mean: ``(d,)`` mean of s.
        std: ``(d,)`` population standard deviation of s.
        min: ``(d,)`` smallest s (+inf where nothing was counted).
        max: ``(d,)`` largest s (-inf where nothing was counted).
        mean_alpha: ``(d,)`` mean of alpha = exp(s), the gate on the residual stream.
        mean_beta: ``(d,)`` mean of beta = exp(-s), the gate on the branch.
        saturated: ``(d,)`` fraction of values with ``|tanh(g(x))| >= threshold``.
        curvature: ``(d,)`` the effective curvature c when the statistics were read.
        nonfinite: number of non-finite values of s that were left out of the statistics.
        hist_counts: ``(HIST_BINS,)`` histogram of s over all dimensions.
        hist_bound: the histogram covers ``[-hist_bound, hist_bound]`` in equal bins.
        threshold: the saturation threshold used.
    """

    name: str
    dim: int
    calls: int
    count: Tensor
    mean: Tensor
    std: Tensor
    min: Tensor
    max: Tensor
    mean_alpha: Tensor
    mean_beta: Tensor
    saturated: Tensor
    curvature: Tensor
    nonfinite: int
    hist_counts: Tensor
    hist_bound: float
    threshold: float

    @property
    def tokens(self) -> int:
        """Number of token positions counted (the largest per-dimension count)."""
        return int(self.count.max()) if self.count.numel() else 0

    def overall(self) -> dict[str, float]:
        """Statistics pooled over all dimensions: mean/std/min/max of s, mean alpha/beta,
        saturated fraction, and mean/max of |c|."""
        n = self.count.double()
        total = float(n.sum())
        abs_c = self.curvature.abs()
        out = {"mean_abs_c": float(abs_c.mean()), "max_abs_c": float(abs_c.max())}
        if total == 0:
            nan = float("nan")
            return {**out, **dict.fromkeys(
                ("mean_s", "std_s", "min_s", "max_s", "mean_alpha", "mean_beta", "saturated"), nan
            )}
        w = n / total
        mean = float((w * self.mean).sum())
        # Pooled variance: within-dimension variance plus the spread of the dimension means.
        var = float((w * (self.std.double() ** 2 + (self.mean.double() - mean) ** 2)).sum())
        return {
            **out,
            "mean_s": mean,
            "std_s": math.sqrt(max(var, 0.0)),
            "min_s": float(self.min.min()),
            "max_s": float(self.max.max()),
            "mean_alpha": float((w * self.mean_alpha).sum()),
            "mean_beta": float((w * self.mean_beta).sum()),
            "saturated": float((w * self.saturated).sum()),
        }

    def hist_edges(self) -> Tensor:
        """``(HIST_BINS + 1,)`` bin edges of :attr:`hist_counts`."""
        return torch.linspace(-self.hist_bound, self.hist_bound, self.hist_counts.numel() + 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (lists for per-dimension fields), for JSON."""
        def clean(t: Tensor) -> list[float | None]:
            # JSON has no inf/nan: a dimension that saw no value reports null.
            return [v if math.isfinite(v) else None for v in t.double().tolist()]

        return {
            "name": self.name,
            "dim": self.dim,
            "calls": self.calls,
            "tokens": self.tokens,
            "nonfinite": self.nonfinite,
            "overall": {k: (v if math.isfinite(v) else None) for k, v in self.overall().items()},
            "per_dim": {
                "count": self.count.long().tolist(),
                "mean_s": clean(self.mean),
                "std_s": clean(self.std),
                "min_s": clean(self.min),
                "max_s": clean(self.max),
                "mean_alpha": clean(self.mean_alpha),
                "mean_beta": clean(self.mean_beta),
                "saturated": clean(self.saturated),
                "curvature": clean(self.curvature),
            },
            "histogram": {"bound": self.hist_bound, "counts": self.hist_counts.long().tolist()},
        }


class _Accumulator:
    """Running per-dimension statistics of one gate; all state lives on the gate's device."""

    def __init__(self, dim: int, threshold: float) -> None:
        self.dim = dim
        self.threshold = threshold
        self.calls = 0
        self.state: dict[str, Tensor] | None = None  # created on the first call, on z's device
        self.hist_bound = 0.0

    def _init_state(self, device: torch.device) -> dict[str, Tensor]:
        z = torch.zeros(self.dim, dtype=torch.float64, device=device)
        return {
            "count": z.clone(), "mean": z.clone(), "m2": z.clone(),
            "min": torch.full_like(z, math.inf), "max": torch.full_like(z, -math.inf),
            "sum_alpha": z.clone(), "sum_beta": z.clone(), "saturated": z.clone(),
            "nonfinite": torch.zeros((), dtype=torch.float64, device=device),
            "hist": torch.zeros(HIST_BINS, dtype=torch.float64, device=device),
        }

    def _fit_hist_range(self, abs_c_max: float) -> None:
        st = self.state
        assert st is not None
        if self.hist_bound == 0.0:
            # Nothing binned yet (or c was 0, so every s sat in the centre bin): start at |c|.
            self.hist_bound = abs_c_max if abs_c_max > 0 else 1e-3
            return
        k = HIST_BINS // 2
        while abs_c_max > self.hist_bound:
            # Triple the range: new bin j covers old bins 3j-1, 3j, 3j+1 (centred indices).
            centred = torch.arange(-k, k + 1, device=st["hist"].device, dtype=torch.float64)
            target = (torch.round(centred / 3) + k).long()
            st["hist"] = torch.zeros_like(st["hist"]).index_add_(0, target, st["hist"])
            self.hist_bound *= 3

    def update(self, z: Tensor, c: Tensor, keep: Tensor | None) -> Tensor:
        """Add one call. z ``(..., d)``; c ``(d,)`` or ``(1,)``; keep bool ``z.shape[:-1]`` or None.

        Masked and non-finite values are weighted out rather than indexed away, so that no
        shape depends on the data (boolean indexing would cost a host sync on a GPU).

        Returns:
            s ``(..., d)`` in float64 on z's device, for optional per-token capture.
        """
        if self.state is None:
            self.state = self._init_state(z.device)
        st = self.state
        self.calls += 1
        c64 = c.detach().to(device=z.device, dtype=torch.float64)
        t_full = torch.tanh(z.detach().to(torch.float64))
        s_full = c64 * t_full
        s, t = s_full.reshape(-1, self.dim), t_full.reshape(-1, self.dim)
        if s.shape[0] == 0:  # an empty input
            return s_full
        finite = torch.isfinite(s)
        valid = finite if keep is None else finite & keep.reshape(-1, 1)
        st["nonfinite"] += (~finite if keep is None else ~finite & keep.reshape(-1, 1)).sum()
        w = valid.to(torch.float64)
        s0 = torch.where(valid, s, 0.0)
        n_b = w.sum(0)
        mean_b = s0.sum(0) / n_b.clamp(min=1)
        m2_b = (w * (s0 - mean_b) ** 2).sum(0)
        n_a, n = st["count"], st["count"] + n_b
        delta = mean_b - st["mean"]
        st["mean"] += delta * n_b / n.clamp(min=1)
        st["m2"] += m2_b + delta**2 * n_a * n_b / n.clamp(min=1)
        st["count"] = n
        st["min"] = torch.minimum(st["min"], torch.where(valid, s, math.inf).amin(0))
        st["max"] = torch.maximum(st["max"], torch.where(valid, s, -math.inf).amax(0))
        st["sum_alpha"] += (w * torch.exp(s0)).sum(0)
        st["sum_beta"] += (w * torch.exp(-s0)).sum(0)
        st["saturated"] += (valid & (t.abs() >= self.threshold)).sum(0)
        self._fit_hist_range(float(c64.abs().max()))  # the one host sync per call
        b = self.hist_bound
        idx = ((s0 + b) / (2 * b) * HIST_BINS).floor().clamp(0, HIST_BINS - 1).long()
        st["hist"].index_add_(0, idx.reshape(-1), w.reshape(-1))
        return s_full

    def read(self, name: str, c: Tensor) -> GateStats:
        st = self.state or self._init_state(c.device)
        n = st["count"].cpu()
        nz = n.clamp(min=1)
        empty = n == 0
        nan = torch.full_like(n, math.nan)

        def per_dim(total: Tensor) -> Tensor:
            return torch.where(empty, nan, total.cpu() / nz)

        c_full = c.detach().double().cpu().expand(self.dim).clone()
        return GateStats(
            name=name, dim=self.dim, calls=self.calls, count=n,
            mean=torch.where(empty, nan, st["mean"].cpu()),
            std=per_dim(st["m2"]).sqrt(),
            min=st["min"].cpu(), max=st["max"].cpu(),
            mean_alpha=per_dim(st["sum_alpha"]), mean_beta=per_dim(st["sum_beta"]),
            saturated=per_dim(st["saturated"]), curvature=c_full,
            nonfinite=int(st["nonfinite"]), hist_counts=st["hist"].cpu(),
            hist_bound=self.hist_bound, threshold=self.threshold,
        )


def short_names(names: Sequence[str]) -> list[str]:
    """Drop the dotted prefix and suffix that all names share, for labels.

    ``["bert.encoder.layer.0.attention.output.gate", "bert.encoder.layer.0.output.gate"]``
    -> ``["0.attention.output", "0.output"]`` (a shared suffix is kept where dropping it
    would leave a bare layer number beside longer labels). A single name keeps its last
    two parts.
    """
    parts = [n.split(".") for n in names]
    if len(parts) <= 1:
        return [".".join(p[-2:]) for p in parts]
    pre = 0
    while all(len(p) > pre + 1 for p in parts) and len({p[pre] for p in parts}) == 1:
        pre += 1
    suf = 0
    while all(len(p) > pre + suf + 1 for p in parts) and len({p[-1 - suf] for p in parts}) == 1:
        suf += 1
    # Give back suffix parts while a label would be a bare layer number beside labels that
    # are not (BERT: "0.attention.output" and "0.output", not "0.attention" and "0").
    def bare(k: int) -> list[bool]:
        return [all(x.isdigit() for x in p[pre : len(p) - k]) for p in parts]

    while suf > 0 and any(bare(suf)) and not all(bare(suf)):
        suf -= 1
    return [".".join(p[pre : len(p) - suf]) for p in parts]


def _find_gates(model: nn.Module) -> tuple[list[tuple[str, VectorGate]], list[str]]:
    """The VectorGates of ``model`` and the names of its other residual gates (not recorded)."""
    found, skipped = [], []
    for name, gate in gates(model):
        label = name or type(gate).__name__
        (found.append((label, gate)) if isinstance(gate, VectorGate) else skipped.append(label))
    return found, skipped


class GateRecorder(HookedWatcher):
    """Records every :class:`~vectorgate.gate.VectorGate` of ``model`` while it runs.

    Use it as a context manager (or call :meth:`start` / :meth:`stop`). Statistics
    accumulate over all calls until :meth:`reset`; they are read with :meth:`stats`,
    :meth:`summary`, :meth:`to_dict` or :meth:`to_json`.

    Args:
        model: any module containing VectorGate modules (plain blocks, ``GatedResidual``
            stacks, Hugging Face models patched by vectorgate, timm ``GatedBlock``).
        threshold: saturation threshold on ``|tanh(g(x))|`` (see :data:`SATURATION_THRESHOLD`).

    Raises:
        ValueError: if ``model`` holds no VectorGate, its gate projections are stacked, or
            ``threshold`` is not in (0, 1].
    """

    _busy = "recording"

    def __init__(self, model: nn.Module, *, threshold: float = SATURATION_THRESHOLD) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        if any(isinstance(m, StackedProjection) for m in model.modules()):
            raise ValueError(
                "GateRecorder reads z from each gate's own projection, which a model with stacked "
                "projections (stack_gate_projections) does not call; record on the unstacked model "
                "(vectorgate.unpatch, then patch or load_gates again)"
            )
        found, self.skipped = _find_gates(model)
        if not found:
            found = f" (found other residual variants: {', '.join(self.skipped)})" if self.skipped else ""
            raise ValueError(f"model {type(model).__name__} contains no VectorGate to record{found}")
        self.gates: dict[str, VectorGate] = dict(found)
        self.threshold = float(threshold)
        self._acc = {name: _Accumulator(g.dim, self.threshold) for name, g in found}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._mask: Tensor | None = None
        self._capturing = False
        self._tokens: dict[str, Tensor] = {}
        self._token_masks: dict[str, Tensor | None] = {}

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        """Whether hooks are registered right now."""
        return self.running

    def _register(self) -> list[torch.utils.hooks.RemovableHandle]:
        """One forward hook per gate (on ``gate.proj``)."""
        if self.skipped:
            warnings.warn(
                f"GateRecorder records VectorGate modules only; not recording {len(self.skipped)} "
                f"other residual variant(s): {', '.join(self.skipped)}",
                stacklevel=4,
            )
        return [gate.proj.register_forward_hook(self._make_hook(name, gate)) for name, gate in self.gates.items()]

    def stop(self) -> None:
        """Remove every hook (safe to call twice) and clear the mask."""
        super().stop()
        self._mask = None
        self._capturing = False

    def reset(self) -> None:
        """Forget all statistics and captured tokens (hooks stay as they are)."""
        self._acc = {name: _Accumulator(g.dim, self.threshold) for name, g in self.gates.items()}
        self._tokens.clear()
        self._token_masks.clear()

    # -- masks and token capture ---------------------------------------------------------
    def set_mask(self, mask: Tensor | None) -> None:
        """Count only positions where ``mask`` is nonzero in the following calls.

        Args:
            mask: ``(batch, seq)`` (e.g. a tokenizer's ``attention_mask``; any shape that
                broadcasts to the leading dimensions of the gate input ``(..., d)``), or
                None to count everything.
        """
        if mask is not None and not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
        if mask is not None and mask.is_complex():
            raise TypeError(f"mask must be a bool, integer or real tensor, got dtype {mask.dtype}")
        self._mask = None if mask is None else mask.detach() != 0

    @contextlib.contextmanager
    def masked(self, mask: Tensor | None) -> Iterator[GateRecorder]:
        """``with rec.masked(attention_mask): model(...)``: :meth:`set_mask` for one block."""
        self.set_mask(mask)
        try:
            yield self
        finally:
            self._mask = None

    @contextlib.contextmanager
    def capture_tokens(self) -> Iterator[GateRecorder]:
        """Keep the per-token s of every gate for the calls inside the block (the last call
        per gate wins), for token-level pictures. Read them with :meth:`token_values`."""
        self._tokens.clear()
        self._token_masks.clear()
        self._capturing = True
        try:
            yield self
        finally:
            self._capturing = False

    def token_values(self) -> dict[str, Tensor]:
        """Per-token s of the captured call: gate name -> float32 CPU tensor ``(..., d)``,
        the shape of the gate's input, in gate order."""
        return {n: self._tokens[n] for n in self.gates if n in self._tokens}

    def token_mask(self, name: str) -> Tensor | None:
        """The mask that applied to the captured call of gate ``name`` (None: no mask)."""
        return self._token_masks.get(name)

    def _keep(self, name: str, z: Tensor) -> Tensor | None:
        if self._mask is None:
            return None
        lead = z.shape[:-1]
        mask = self._mask.to(z.device)
        try:
            fits = torch.broadcast_shapes(mask.shape, lead) == lead
        except RuntimeError:
            fits = False
        if fits:
            return mask.expand(lead)
        if mask.numel() == math.prod(lead):  # e.g. a model that flattens (batch, seq) tokens
            return mask.reshape(lead)
        raise ValueError(
            f"mask of shape {tuple(self._mask.shape)} does not fit gate {name!r}, whose input has "
            f"shape {tuple(z.shape)}: expected a mask broadcastable to {tuple(lead)} "
            "(e.g. the batch's attention_mask of shape (batch, seq))"
        )

    def _make_hook(self, name: str, gate: VectorGate):
        def hook(module: nn.Module, args: tuple[Any, ...], z: Tensor) -> None:
            if not isinstance(z, Tensor) or z.shape[-1:] != (gate.dim,):
                raise TypeError(
                    f"gate {name!r}: expected its projection to return a tensor (..., {gate.dim}), "
                    f"got {type(z).__name__} {tuple(getattr(z, 'shape', ()))}"
                )
            keep = self._keep(name, z)
            with torch.no_grad():
                s = self._acc[name].update(z, gate.effective_curvature(), keep)
            if self._capturing:
                self._tokens[name] = s.float().cpu()
                self._token_masks[name] = None if keep is None else keep.cpu()

        return hook

    # -- reading -----------------------------------------------------------------------
    def stats(self) -> dict[str, GateStats]:
        """Gate name -> :class:`GateStats`, in the model's module order (one host sync per gate)."""
        with torch.no_grad():
            return {n: self._acc[n].read(n, g.effective_curvature()) for n, g in self.gates.items()}

    def unobserved(self) -> list[str]:
        """Names of gates that were never called while recording (e.g. bypassed by a fused
        path that does not call ``gate.proj``, or not on the model's forward path)."""
        return [n for n, a in self._acc.items() if a.calls == 0]

    def to_dict(self) -> dict[str, Any]:
        """All statistics as plain Python values: ``{"threshold", "hist_bins", "gates": [...]}``."""
        return {
            "threshold": self.threshold,
            "hist_bins": HIST_BINS,
            "gates": [st.to_dict() for st in self.stats().values()],
        }

    def to_json(self, path: str | pathlib.Path | None = None) -> str:
        """:meth:`to_dict` as JSON; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            pathlib.Path(path).write_text(text)
        return text

    def summary(self) -> str:
        """A table with one row per gate: calls, tokens, |c|, s statistics, mean alpha/beta,
        saturated fraction. Gates never called and non-finite values are flagged below it."""
        stats = self.stats()
        labels = short_names(list(stats))
        head = (
            f"{'gate':<28} {'calls':>5} {'tokens':>8} {'mean|c|':>8} {'max|c|':>7} "
            f"{'mean s':>8} {'std s':>7} {'min s':>8} {'max s':>8} {'alpha':>6} {'beta':>6} {'sat%':>6}"
        )
        rows = [head, "-" * len(head)]
        for label, st in zip(labels, stats.values(), strict=True):
            o = st.overall()
            rows.append(
                f"{label[-28:]:<28} {st.calls:>5} {st.tokens:>8} {o['mean_abs_c']:>8.4f} "
                f"{o['max_abs_c']:>7.3f} {o['mean_s']:>8.4f} {o['std_s']:>7.4f} {o['min_s']:>8.4f} "
                f"{o['max_s']:>8.4f} {o['mean_alpha']:>6.3f} {o['mean_beta']:>6.3f} "
                f"{100 * o['saturated']:>6.2f}"
            )
        rows.append(
            f"s = c*tanh(g(x)); alpha = exp(s) keeps the residual stream, beta = exp(-s) scales "
            f"the branch; sat% = share of values with |tanh(g(x))| >= {self.threshold:g}."
        )
        missing = self.unobserved()
        if missing:
            rows.append(f"NOT OBSERVED (never called while recording): {', '.join(missing)}")
        bad = {n: st.nonfinite for n, st in stats.items() if st.nonfinite}
        if bad:
            rows.append("NON-FINITE s left out: " + ", ".join(f"{n}: {k}" for n, k in bad.items()))
        return "\n".join(rows)

