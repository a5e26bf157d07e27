"""Numerical health of gated models: opt-in checks that make a non-finite value loud.

What the library guarantees, and what it leaves to you (see ``docs/reliability.md``):

- The gates never create a NaN or an Inf from finite inputs while ``exp(|c|)`` fits the
  compute dtype: ``|s| <= |c|`` bounds alpha and beta to ``[exp(-|c|), exp(|c|)]`` and
  ``exp`` is evaluated in float32 (float64 for float64 input) even under autocast.
- A NaN or Inf that arrives in ``x`` or ``f(x)`` propagates to ``y`` exactly as it would
  through the plain residual ``x + f(x)``. The forward pass does not look for it, because a
  check means a device-to-host sync on every call.
- :func:`check_gates`, called by a training loop once per step (or every few steps), costs
  one sync and raises :class:`NonFiniteError` naming every gate whose curvature,
  projection or gradient went non-finite, so no NaN passes unreported.
- It also warns (:class:`UnstableGateWarning`), naming the fix, when the gates of a model
  can together scale the residual stream by more than ``exp(LOG_AMPLIFICATION_WARN)``,
  i.e. beyond float16's range, and, given a measured
  :class:`~vectorgate.compound_gain.CompoundGainReport`, when the compound gain measured on
  real data has left its budget. Gates built by :func:`vectorgate.patch` (or with
  ``depth=``) have their curvatures capped so that the first never fires
  (:mod:`vectorgate.depth`). The stress runs (``benchmarks/stress.py``) measured what
  happens past it under fp16 autocast: NaN at the first step when the gates start there,
  and, when training takes them there, a GradScaler that skips most steps (no NaN reaches
  the weights, but the model stops learning).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vectorgate.discovery import gates

if TYPE_CHECKING:
    from vectorgate.compound_gain import CompoundGainReport

__all__ = [
    "LOG_AMPLIFICATION_WARN",
    "GateHealth",
    "HealthReport",
    "NonFiniteError",
    "UnstableGateWarning",
    "assert_finite",
    "check_gates",
    "gate_health",
]

LOG_AMPLIFICATION_WARN = math.log(torch.finfo(torch.float16).max)  # ~11.09
"""Bound on ``sum over gates of max |c|`` beyond which :func:`check_gates` warns.

Gates applied in sequence multiply a channel of the residual stream by up to
``exp(sum of max |c|)``. Past ``log(65504)`` an O(1) stream can leave float16's range, so
under fp16 autocast the next gate's projection (and the branch's first layer) overflow to
Inf and NaN; in any dtype the branches' O(1) outputs are then negligible beside the stream.
The stress runs measured the realised amplification close to this bound (the projections
saturate tanh as the stream grows), see ``docs/reliability.md``.
"""


class NonFiniteError(RuntimeError):
    """A NaN or Inf was found; the message names the tensor(s) or gate(s) it was found in."""


class UnstableGateWarning(UserWarning):
    """The gates can together amplify the residual stream beyond float16's range."""


@dataclass(frozen=True)
class GateHealth:
    """The state of one gate after a step.

    Attributes:
        name: the gate's qualified name in the model (``named_modules()``).
        max_abs_curvature: ``max |c|`` as used in the gate (after the soft cap, if any).
        capped: whether the gate has a ``max_curvature``.
        nonfinite: names of the gate's parameters or gradients holding a NaN or Inf.
    """

    name: str
    max_abs_curvature: float
    capped: bool
    nonfinite: tuple[str, ...]


@dataclass(frozen=True)
class HealthReport:
    """Health of every gate of a model, in ``named_modules()`` order.

    Attributes:
        gates: one :class:`GateHealth` per gate.
    """

    gates: tuple[GateHealth, ...]

    @property
    def nonfinite(self) -> tuple[GateHealth, ...]:
        """The gates with a NaN or Inf in a parameter or gradient."""
        return tuple(g for g in self.gates if g.nonfinite)

    @property
    def max_abs_curvature(self) -> float:
        """The largest ``|c|`` over all gates (0.0 for a model without gates)."""
        return max((g.max_abs_curvature for g in self.gates), default=0.0)

    @property
    def log_amplification_bound(self) -> float:
        """``sum over gates of max |c|``: the log of the largest factor by which the skip
        path of a stack of these gates (applied in sequence) can scale a channel."""
        return math.fsum(g.max_abs_curvature for g in self.gates)


def _gates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    # Every gate with a curvature (VectorGate and its subclasses, peers that adopt
    # effective_curvature()) is checked.
    return [
        (name or type(gate).__name__, gate)
        for name, gate in gates(model)
        if callable(getattr(gate, "effective_curvature", None))
    ]


def gate_health(model: nn.Module, *, grads: bool = True) -> HealthReport:
    """Collect :class:`GateHealth` for every gate in ``model``, with one host sync in total.

    Args:
        model: any module; its gates are found by ``named_modules()``.
        grads: also check each parameter's ``.grad`` where it exists.

    Returns:
        A :class:`HealthReport`; empty when the model has no gates.
    """
    gates = _gates(model)
    if not gates:
        return HealthReport(())
    # Parallel lists: for each entry of `stats`, which gate it belongs to and what it is
    # (None: the gate's max |c|; a name: a 0/1 flag "this tensor holds a NaN or Inf").
    owners: list[tuple[int, str | None]] = []
    stats: list[Tensor] = []
    with torch.no_grad():
        for i, (_, gate) in enumerate(gates):
            owners.append((i, None))
            stats.append(gate.effective_curvature().detach().abs().max().float().reshape(1))
            for pname, p in gate.named_parameters():
                tensors = [(pname, p)]
                if grads and p.grad is not None:
                    tensors.append((f"{pname}.grad", p.grad))
                for label, t in tensors:
                    owners.append((i, label))
                    stats.append((~torch.isfinite(t)).any().float().reshape(1))
        values = torch.cat([v.to(stats[0].device) for v in stats]).tolist()  # the one sync
    curv = [0.0] * len(gates)
    flags: list[list[str]] = [[] for _ in gates]
    for (i, label), value in zip(owners, values, strict=True):
        if label is None:
            curv[i] = value
        elif value:
            flags[i].append(label)
    return HealthReport(
        tuple(
            GateHealth(
                name=name,
                max_abs_curvature=curv[i],
                capped=getattr(gate, "max_curvature", None) is not None,
                nonfinite=tuple(flags[i]),
            )
            for i, (name, gate) in enumerate(gates)
        )
    )


def check_gates(
    model: nn.Module,
    *,
    grads: bool = True,
    log_amplification_warn: float | None = LOG_AMPLIFICATION_WARN,
    gain: CompoundGainReport | None = None,
) -> HealthReport:
    """Raise if any gate went non-finite; warn if the gates can blow up the residual stream.

    Call it after ``backward()`` (to see gradients) or after ``optimizer.step()`` (to see
    the new weights), e.g. every step or every N steps. It costs one host sync.

    Args:
        model: any module containing gates.
        grads: also check gradients.
        log_amplification_warn: warn when the sum over all gates of ``max |c|`` (the log
            of the largest factor by which gates applied in sequence can scale the stream)
            is above this; ``None`` turns the warning off. Meant for models whose gates sit
            in sequence on one residual stream (a Transformer, an MLP stack). The default,
            ``log(65504)``, is float16's range; for bf16/fp32 training, whose range is
            ``e^88``, pass e.g. ``math.log(torch.finfo(torch.bfloat16).max)``.
        gain: a compound gain measured on the model's last forward pass
            (:meth:`vectorgate.compound_gain.CompoundGainMonitor.report`); warn when it is
            outside its budget.

    Returns:
        The :class:`HealthReport`, for logging.

    Raises:
        NonFiniteError: naming each gate and the tensors in it that hold a NaN or Inf.
    """
    report = gate_health(model, grads=grads)
    bad = report.nonfinite
    if bad:
        listed = "; ".join(f"{g.name}: {', '.join(g.nonfinite)}" for g in bad)
        raise NonFiniteError(f"non-finite values in {len(bad)} gate(s): {listed}")
    bound = report.log_amplification_bound
    if log_amplification_warn is not None and bound > log_amplification_warn:
        per_gate = log_amplification_warn / len(report.gates)
        warnings.warn(
            f"the {len(report.gates)} gates can together scale the residual stream by up to "
            f"e^{bound:.3g} (sum of max |c|; warning threshold e^{log_amplification_warn:.3g}, "
            f"float16's range): under fp16 autocast the stream then overflows, giving NaN or a "
            f"GradScaler that skips most steps. Build the gates with max_curvature <= "
            f"{per_gate:.3g} (= {log_amplification_warn:.3g} / {len(report.gates)} gates), "
            f"lower init_curvature, or train in bf16.",
            UnstableGateWarning,
            stacklevel=2,
        )
    if gain is not None and not gain.within_budget:
        warnings.warn(
            f"the measured compound gain of the residual stream left its budget: max |log gain| "
            f"{gain.max_abs_log_gain:.3g} > {gain.budget:.3g} (gain {gain.min_gain:.3g} to {gain.max_gain:.3g}, "
            f"{100 * gain.saturated:.0f}% of gate values saturated). The gates' curvatures are not "
            "capped for this depth: patch with the default log_gain_budget, or build the gates with "
            "depth=<number of gated sites> (see vectorgate.depth), or lower the learning rate.",
            UnstableGateWarning,
            stacklevel=2,
        )
    return report


def assert_finite(name: str, t: Tensor) -> None:
    """Raise :class:`NonFiniteError` naming ``name`` if ``t`` holds a NaN or Inf (one sync)."""
    if not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise NonFiniteError(
            f"{name} must be finite, got {n_nan} NaN and {n_inf} Inf among {t.numel()} values "
            f"(shape {tuple(t.shape)}, dtype {t.dtype})"
        )
