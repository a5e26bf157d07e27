"""Gates in a hand-written training loop (Hugging Face ``accelerate`` or plain PyTorch).

:func:`gate_optimizer` builds the optimizer from :func:`vectorgate.patching.param_groups`:
weight decay on the backbone's matrices only, the gates on their own learning rate and
never decayed on their vectors (curvature, biases). Hand it to ``Accelerator.prepare`` as
any optimizer; the groups survive the wrapping::

    from accelerate import Accelerator
    from vectorgate.integrations.accelerate import gate_optimizer

    vectorgate.patch(model)
    accelerator = Accelerator()
    model, optimizer, loader = accelerator.prepare(model, gate_optimizer(model, lr=5e-5, gate_lr=1e-3), loader)

Nothing here imports accelerate: the same optimizer serves a plain loop, or a
``transformers.Trainer`` through ``optimizers=(gate_optimizer(model, ...), None)`` (or use
:class:`vectorgate.integrations.transformers.trainer.GateTrainer`).

:func:`log_compound_gain` sends the compound gain of the gates
(:class:`vectorgate.compound_gain.CompoundGainMonitor`) to the loop's trackers::

    monitor = CompoundGainMonitor(accelerator.unwrap_model(model)).start()
    for step, batch in enumerate(loader):
        accelerator.backward(model(**batch).loss)
        if step % 50 == 0:
            log_compound_gain(accelerator, monitor.report(), step)   # also runs check_gates
        optimizer.step(); optimizer.zero_grad()
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vectorgate.compound_gain import CompoundGainReport
from vectorgate.patching import gates, param_groups
from vectorgate.stability import check_gates

__all__ = ["gate_optimizer", "log_compound_gain"]


def log_compound_gain(
    accelerator: Any, report: CompoundGainReport, step: int, *, model: nn.Module | None = None, prefix: str = "gates/"
) -> dict[str, float]:
    """Log ``report``'s scalars with ``accelerator.log`` (any object with a ``log(values,
    step=)`` method) and warn if the gain left its budget.

    Args:
        accelerator: an ``accelerate.Accelerator`` (or a tracker with the same ``log``).
        report: from :meth:`vectorgate.compound_gain.CompoundGainMonitor.report`.
        step: the training step.
        model: if given, :func:`vectorgate.stability.check_gates` runs on it (raises on a
            NaN or Inf in a gate); else only the budget is checked.
        prefix: prefix of the logged keys.

    Returns:
        The values logged.
    """
    values = report.scalars(prefix)
    accelerator.log(values, step=step)
    check_gates(model if model is not None else nn.Module(), gain=report)
    return values


def gate_optimizer(
    model: nn.Module,
    *,
    lr: float,
    gate_lr: float | None = None,
    weight_decay: float = 0.01,
    gate_weight_decay: float | None = 0.0,
    gate_lr_width_ref: int | None = None,
    optimizer_cls: type[torch.optim.Optimizer] = torch.optim.AdamW,
    **optimizer_kwargs: Any,
) -> torch.optim.Optimizer:
    """An optimizer (AdamW by default) over ``param_groups(model, ...)``.

    Args:
        model: a patched model (see :func:`vectorgate.patch`); call this *before* wrapping
            it (``Accelerator.prepare``, DDP, FSDP), on the model whose parameters train.
        lr: the backbone's learning rate (also the optimizer's default).
        gate_lr: the gates' learning rate; None: ``lr``.
        weight_decay: decay of the backbone's matrices (tensors with ``dim >= 2``).
        gate_weight_decay: decay of the gates' matrices, 0 by default; None: ``weight_decay``.
            The gates' vectors are never decayed.
        gate_lr_width_ref: width-aware gate lr (see :func:`vectorgate.patching.param_groups`).
        optimizer_cls: a torch optimizer class taking parameter groups.
        **optimizer_kwargs: passed to ``optimizer_cls`` (``betas``, ``eps``, ``fused``, ...).

    Returns:
        The optimizer; its groups carry ``name`` labels (``"backbone/decay"``,
        ``"gates/no_decay"``, ...).

    Raises:
        ValueError: a learning rate that is not a positive finite number, or a model that
            holds no gate (use a plain optimizer for an unpatched model).
    """
    for name, value in (("lr", lr), ("gate_lr", gate_lr)):
        if value is None and name == "gate_lr":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if next(gates(model), None) is None:
        raise ValueError(
            f"{type(model).__name__} holds no vectorgate gate: call vectorgate.patch(model) before "
            "building the optimizer (and before Accelerator.prepare)"
        )
    groups = param_groups(
        model, weight_decay=weight_decay, lr=lr, gate_lr=gate_lr,
        gate_weight_decay=gate_weight_decay, gate_lr_width_ref=gate_lr_width_ref,
    )
    return optimizer_cls(groups, lr=lr, **optimizer_kwargs)
