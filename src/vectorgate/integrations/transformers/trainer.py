"""``GateTrainer``: ``transformers.Trainer`` with the gates on their own optimizer groups.

transformers' Trainer decays every parameter whose name is not a bias or a norm's; a gate's
curvature c (a vector named ``curvature``) is then decayed towards 0, which is where the
gate cannot learn (ds/dz = c sech^2 z), and the gates train at the backbone's learning rate,
at which c barely moves. :class:`GateTrainer` builds the optimizer as Trainer does (same
``args.optim``, betas, eps, same decay rule for the backbone) and then moves every gate
parameter into the groups of :func:`vectorgate.patching.param_groups`: their own learning
rate ``gate_lr``, ``gate_weight_decay`` on the gates' matrices (0 by default) and never any
decay on their vectors (c, biases). The learning-rate scheduler, created afterwards, scales
every group alike, so the gate/backbone ratio holds throughout training::

    from vectorgate.integrations.transformers.trainer import GateTrainer

    vectorgate.patch(model)
    trainer = GateTrainer(model=model, args=args, train_dataset=ds, gate_lr=1e-3)
    trainer.train()

Without a Trainer subclass, build the optimizer yourself and pass it in:
``Trainer(..., optimizers=(vectorgate.integrations.accelerate.gate_optimizer(model, lr=..., gate_lr=...), None))``.
(A ``TrainerCallback`` cannot do this job: the scheduler has captured each group's base
learning rate before the first callback runs, so a group added there would not be scheduled.)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vectorgate._optional import require
from vectorgate.patching import gates, param_groups

Trainer = require("transformers", extra="transformers", needed_by="vectorgate.integrations.transformers.trainer").Trainer

__all__ = ["GateTrainer", "gate_param_groups"]


def gate_param_groups(
    model: nn.Module,
    *,
    gate_lr: float,
    gate_weight_decay: float | None = 0.0,
    weight_decay: float = 0.0,
    gate_lr_width_ref: int | None = None,
) -> list[dict[str, Any]]:
    """The gates' optimizer groups of :func:`vectorgate.patching.param_groups`, and only those.

    Args:
        model: a model holding gates (see :func:`vectorgate.patch`), possibly wrapped (DDP).
        gate_lr: learning rate of the gates.
        gate_weight_decay: decay of the gates' matrices (their vectors are never decayed);
            None: ``weight_decay``.
        weight_decay: the backbone's decay (used only when ``gate_weight_decay`` is None).
        gate_lr_width_ref: see :func:`vectorgate.patching.param_groups`.

    Returns:
        Groups ``{"params", "weight_decay", "lr", "name"}`` of trainable gate parameters.

    Raises:
        ValueError: the model holds no gate, or none of its gate parameters is trainable.
    """
    gate_params = {id(p) for _, g in gates(model) for p in g.parameters()}
    if not gate_params:
        raise ValueError(f"{type(model).__name__} holds no vectorgate gate: call vectorgate.patch(model) first")
    groups = param_groups(
        model, weight_decay=weight_decay, lr=gate_lr, gate_lr=gate_lr,
        gate_weight_decay=gate_weight_decay, gate_lr_width_ref=gate_lr_width_ref,
    )
    ours = [g for g in groups if all(id(p) in gate_params for p in g["params"])]
    if not ours:
        raise ValueError(f"no gate parameter of {type(model).__name__} requires grad: nothing for the gate groups")
    return ours


class GateTrainer(Trainer):
    """A ``transformers.Trainer`` whose optimizer gives the gates their own groups.

    Every argument of ``Trainer`` is accepted and means what it means there; in addition:

    Args:
        gate_lr: learning rate of the gates; None (default): ``args.learning_rate``.
        gate_weight_decay: weight decay of the gates' matrices (default 0: the gates start
            at the identity and decay would only pull them back). Their vectors (curvature,
            biases) are never decayed.
        gate_lr_width_ref: width-aware gate learning rate (see
            :func:`vectorgate.patching.param_groups`); None: off.

    The backbone keeps Trainer's groups and decay rule (``get_decay_parameter_names``):
    ``args.weight_decay`` on everything but biases and norm weights.

    Raises:
        ValueError: ``gate_lr`` or ``gate_weight_decay`` is not a finite non-negative number,
            an optimizer is passed in ``optimizers`` (its groups are the caller's; build it
            with :func:`vectorgate.integrations.accelerate.gate_optimizer` and use a plain
            ``Trainer``), or, when the optimizer is built, the model holds no gate or
            ``args.optim`` names an optimizer that does not keep torch-style parameter
            groups (layer-wise or factory optimizers).
    """

    def __init__(
        self,
        *args: Any,
        gate_lr: float | None = None,
        gate_weight_decay: float | None = 0.0,
        gate_lr_width_ref: int | None = None,
        **kwargs: Any,
    ) -> None:
        for name, value in (("gate_lr", gate_lr), ("gate_weight_decay", gate_weight_decay)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a finite number >= 0 (or None), got {value!r}")
        optimizers = kwargs.get("optimizers", (None, None))
        if optimizers is not None and optimizers[0] is not None:
            raise ValueError(
                "GateTrainer builds the optimizer itself (gate groups from vectorgate.patching.param_groups); "
                "to pass your own, build it with vectorgate.integrations.accelerate.gate_optimizer(model, ...) "
                "and use transformers.Trainer"
            )
        self.gate_lr = gate_lr
        self.gate_weight_decay = gate_weight_decay
        self.gate_lr_width_ref = gate_lr_width_ref
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Trainer's optimizer, with every gate parameter moved to its own group.

        Trainer builds its optimizer first (``args.optim`` and its arguments, the backbone's
        decay rule); the gate parameters are then taken out of Trainer's groups and put into
        the groups of :func:`gate_param_groups`. Nothing has stepped yet, so no optimizer
        state moves. Empty groups are dropped; every group gets a ``name`` (``"backbone/decay"``,
        ``"backbone/no_decay"``, ``"gates/..."``).
        """
        opt_model = self.model if model is None else model
        built_here = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if not built_here:
            return optimizer
        gate_lr = self.args.learning_rate if self.gate_lr is None else float(self.gate_lr)
        groups = gate_param_groups(
            opt_model, gate_lr=gate_lr, gate_weight_decay=self.gate_weight_decay,
            weight_decay=self.args.weight_decay, gate_lr_width_ref=self.gate_lr_width_ref,
        )
        gate_ids = {id(p) for g in groups for p in g["params"]}
        inner = getattr(optimizer, "optimizer", optimizer)  # SageMaker/accelerate-style wrappers
        held = {id(p) for g in getattr(inner, "param_groups", []) for p in g["params"]}
        if not isinstance(inner, torch.optim.Optimizer) or not gate_ids <= held:
            raise ValueError(
                f"GateTrainer cannot give the gates their own groups with optim={self.args.optim!r}: "
                f"{type(inner).__name__} does not hold the model's parameters in torch parameter groups"
            )
        for group in inner.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in gate_ids]
            group.setdefault("name", "backbone/decay" if group.get("weight_decay") else "backbone/no_decay")
        inner.param_groups[:] = [g for g in inner.param_groups if g["params"]]
        for group in groups:
            inner.add_param_group(group)  # the optimizer's defaults (betas, eps, ...) fill the rest
        return optimizer
