"""The task protocol: what the runner needs to train and score one arm.

A task is a small object: it loads its data once, builds a model for a
:class:`~vectorgate_lab.compare.spec.VariantSpec`, yields training batches in an order fixed by
the seed alone (so every variant sees the same data in the same order), computes the loss
of a batch and scores the model on held-out data. Subclass :class:`Task` (or
:class:`ClassificationTask` for tensors + labels) and :func:`register_task` it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vectorgate._registry import register
from vectorgate_lab.compare.spec import VariantSpec

__all__ = ["TASKS", "ClassificationTask", "Task", "register_task"]


@dataclass
class Task:
    """Base class of a comparison task; override the methods that raise.

    Attributes:
        name: registry name.
        metric: name of the score :meth:`evaluate` returns (e.g. ``"accuracy"``).
        higher_is_better: direction of the metric.
        steps: optimizer steps per run (the same for every arm).
        batch_size: examples per step.
        lr: base learning rate (AdamW, linear warmup over 10% of steps, then cosine decay).
        weight_decay: AdamW decay of matrices.
        eval_points: how many times to evaluate during a run (the last is the final score).
        gate_only: train only the gates (and ``keep_trainable``) when True.
        keep_trainable: module names left trainable in gate-only mode.
        device: where to run.
    """

    name: str = "task"
    metric: str = "metric"
    higher_is_better: bool = True
    steps: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    eval_points: int = 4
    gate_only: bool = False
    keep_trainable: tuple[str, ...] = ()
    device: str = "cpu"

    def configure(self, *, quick: bool = False, scale: float = 1.0) -> None:
        """Resize for ``--quick`` (tiny, for tests) or ``--scale`` (steps times ``scale``)."""
        if quick:
            self.steps, self.batch_size, self.eval_points = 3, 4, 2
            self.skip_eval_ratios = (0.0, 0.3, 0.7)
        elif scale != 1.0:
            self.steps = max(1, round(self.steps * scale))

    def supports(self, spec: VariantSpec) -> bool:
        """Whether this task runs ``spec`` (by default: any registered residual variant, or a
        stream-widening peer of :mod:`vectorgate_lab.peers`)."""
        from vectorgate.variants import VARIANTS
        from vectorgate_lab.peers import is_stream_variant

        return spec.variant in VARIANTS or is_stream_variant(spec.variant)

    def load(self) -> None:
        """Read the data (called once, before any run)."""

    def build_model(self, spec: VariantSpec, seed: int) -> nn.Module:
        """A fresh model whose residuals use ``spec`` (global RNG already seeded by the runner)."""
        raise NotImplementedError

    def batch(self, step: int, generator: torch.Generator) -> Any:
        """The training batch of ``step``; draw randomness from ``generator`` only."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        """Scalar training loss of ``batch``."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        """The task metric on held-out data (model already in eval mode)."""
        raise NotImplementedError

    # -- token skipping (arms with ``skip_budget``; see vectorgate.skip) -----------------

    skip_eval_ratios: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    """Target skip ratios at which a budget-trained arm is scored."""

    def token_mask(self, batch: Any) -> Tensor | None:
        """Which positions of a training batch are real tokens (None: all); the budget ranks only those."""
        return None

    def calibration_batches(self) -> list[Any]:
        """Held-out inputs (not the evaluation data) on which skip thresholds are calibrated."""
        raise NotImplementedError(f"task {self.name!r} does not support token skipping")

    def skip_forward(self, model: nn.Module, batch: Any) -> Any:
        """Run ``model`` on one calibration batch."""
        from vectorgate.skip.calibrate import default_forward

        return default_forward(model, batch)


@dataclass
class ClassificationTask(Task):
    """Cross-entropy on tensors ``x`` with integer labels ``y``; metric: accuracy.

    Subclasses fill ``x_train, y_train, x_val, y_val`` in :meth:`load` and implement
    :meth:`build_model` returning logits ``(batch, classes)`` for inputs ``(batch, ...)``.
    """

    metric: str = "accuracy"
    eval_batch_size: int = 500

    def __post_init__(self) -> None:
        self.x_train = self.y_train = self.x_val = self.y_val = torch.empty(0)

    def batch(self, step: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(self.x_train), (self.batch_size,), generator=generator)
        return self.x_train[idx].to(self.device), self.y_train[idx].to(self.device)

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        correct = 0
        for i in range(0, len(self.x_val), self.eval_batch_size):
            x = self.x_val[i : i + self.eval_batch_size].to(self.device)
            y = self.y_val[i : i + self.eval_batch_size].to(self.device)
            correct += int((model(x).argmax(-1) == y).sum())
        return correct / len(self.x_val)


TASKS: dict[str, Callable[[], Task]] = {}


def register_task(name: str, factory: Callable[[], Task]) -> None:
    """Make ``factory()`` runnable as ``vectorgate-lab compare --tasks name``.

    Raises:
        ValueError: ``name`` is empty, or already registered.
    """
    register(TASKS, name, factory, kind="task")
