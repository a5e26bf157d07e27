"""``CompoundGainCallback``: the compound gain of the gates in the Trainer's own logs.

Every ``every`` optimizer steps it reads the compound gain of the residual stream on that
step's forward pass (:class:`vectorgate.compound_gain.CompoundGainMonitor`) and the gated
layers' gradient norms, then adds them to the next log the Trainer writes (``gates/...``
keys: whatever ``report_to`` sends them to, TensorBoard, W&B, ..., and
``trainer.state.log_history``). With ``check=True`` it also calls
:func:`vectorgate.stability.check_gates`, which raises on a NaN or Inf in a gate and warns
when the measured gain leaves its budget::

    trainer = Trainer(model=model, args=args, train_dataset=ds)
    CompoundGainCallback.attach(trainer, every=50)
    trainer.train()

``attach`` puts the callback first, so that the reporting callbacks, which transformers adds
before any callback passed to ``Trainer(callbacks=...)``, see its values; passed through
``callbacks=`` it still fills ``log_history`` and the callbacks after it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vectorgate._optional import require
from vectorgate.compound_gain import CompoundGainMonitor, CompoundGainReport
from vectorgate.depth import DEFAULT_LOG_GAIN_BUDGET
from vectorgate.stability import check_gates

TrainerCallback = require(
    "transformers", extra="transformers", needed_by="vectorgate.integrations.transformers.callbacks"
).TrainerCallback

__all__ = ["CompoundGainCallback"]


class CompoundGainCallback(TrainerCallback):
    """Logs the gates' compound gain, saturation and gated layers' gradient norms.

    Args:
        every: read them every this many optimizer steps (and at step 1).
        budget: the log-gain budget (see :mod:`vectorgate.depth`).
        check: also run :func:`vectorgate.stability.check_gates` on the model at each read.
        prefix: prefix of the logged keys.

    Attributes:
        history: ``[(step, CompoundGainReport), ...]`` of every read, for
            :func:`vectorgate.compound_gain_plot.plot_compound_gain`.
    """

    def __init__(self, every: int = 50, *, budget: float | None = DEFAULT_LOG_GAIN_BUDGET, check: bool = True,
                 prefix: str = "gates/") -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int (optimizer steps), got {every!r}")
        self.every = every
        self.budget = budget
        self.check = check
        self.prefix = prefix
        self.history: list[tuple[int, CompoundGainReport]] = []
        self._monitor: CompoundGainMonitor | None = None
        self._pending: dict[str, float] = {}

    @classmethod
    def attach(cls, trainer: Any, every: int = 50, **kwargs: Any) -> CompoundGainCallback:
        """Add a new callback to ``trainer`` ahead of its reporting callbacks; returns it."""
        callback = cls(every, **kwargs)
        trainer.callback_handler.callbacks.insert(0, callback)
        return callback

    def _due(self, step: int) -> bool:
        # state.global_step counts finished steps: the step being taken now is global_step + 1.
        return step == 1 or step % self.every == 0

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any) -> None:
        """Start measuring: hooks on the model's gates (removed in :meth:`on_train_end`)."""
        if model is None:
            raise ValueError("CompoundGainCallback needs the model (the Trainer passes it to its callbacks)")
        self._monitor = CompoundGainMonitor(model, budget=self.budget).start()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                              **kwargs: Any) -> None:
        """On a due step, after backward: read the compound gain and gradient norms, check the
        gates, and ask the Trainer to log this step."""
        step = state.global_step + 1
        if self._monitor is None or not self._due(step):
            return
        report = self._monitor.report(grads=True)
        self.history.append((step, report))
        self._pending = report.scalars(self.prefix)
        if self.check and model is not None:
            check_gates(model, gain=report)
        control.should_log = True

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        """Add the pending gate scalars to the Trainer's log (and its ``log_history`` entry)."""
        if not self._pending or logs is None:
            return
        logs.update(self._pending)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(self._pending)
        self._pending = {}

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Remove the hooks."""
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
