"""The built-in comparison tasks, registered by name for ``vectorgate-lab compare --tasks``."""

from __future__ import annotations

from vectorgate_lab.compare.task import register_task
from vectorgate_lab.compare.tasks.charlm import CharLMShakespeareTask
from vectorgate_lab.compare.tasks.text import TextAdapterTask, TextFineTuneTask
from vectorgate_lab.compare.tasks.vit import ViTMnistTask

__all__ = ["CHARLM_LONG_STEPS", "CHARLM_SWEEP_STEPS", "VIT_LONG_STEPS", "CharLMShakespeareTask", "TextAdapterTask", "TextFineTuneTask",
           "ViTMnistTask"]

#: Steps of the converged tasks (see docs/results.md for the pilot that sized them).
CHARLM_LONG_STEPS = 1500
VIT_LONG_STEPS = 3000
CHARLM_SWEEP_STEPS = 200

register_task("rt_full", lambda: TextFineTuneTask(name="rt_full", dataset="rt"))
register_task("rt_adapt", lambda: TextAdapterTask(name="rt_adapt", dataset="rt"))
# SMS spam is the easier task (shorter texts, near-separable): 60 steps of 16.
register_task("sms_full", lambda: TextFineTuneTask(name="sms_full", dataset="sms", steps=60))
register_task("sms_adapt", lambda: TextAdapterTask(name="sms_adapt", dataset="sms", steps=60))
register_task("vit_mnist", ViTMnistTask)
register_task("charlm_shakespeare", CharLMShakespeareTask)
# Sized to converge on a 2-core CPU (issue 15): plain's validation curve flattens before the
# end. 20 evaluations so the slope over the last 10% of steps can be read off every run.
register_task("charlm_long", lambda: CharLMShakespeareTask(
    name="charlm_long", steps=CHARLM_LONG_STEPS, n_embd=128, n_layer=4, n_head=4, context=64,
    eval_points=20, eval_windows=256, max_chars=None))
register_task("vit_long", lambda: ViTMnistTask(
    name="vit_long", steps=VIT_LONG_STEPS, eval_points=20, augment_shift=2))
# The depth and learning-rate sweeps: the same char-LM at 4, 8, 16 and 32 layers, 200 steps (0.4M
# characters, early training) so that the whole sweep fits about two hours of a 2-core CPU next
# to the headline runs; `--scale` lengthens it on larger machines. 10 evaluations: at 200 steps,
# 20 would cost a quarter of the run.
for _layers in (4, 8, 16, 32):
    register_task(f"charlm_sweep_{_layers}l", lambda layers=_layers: CharLMShakespeareTask(
        name=f"charlm_sweep_{layers}l", steps=CHARLM_SWEEP_STEPS, n_embd=128, n_layer=layers, n_head=4,
        context=64, eval_points=10, eval_windows=256, max_chars=None))
