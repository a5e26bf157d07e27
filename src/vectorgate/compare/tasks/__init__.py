"""The built-in comparison tasks, registered by name for ``vectorgate compare --tasks``."""

from __future__ import annotations

from vectorgate.compare.task import register_task
from vectorgate.compare.tasks.charlm import CharLMShakespeareTask
from vectorgate.compare.tasks.text import TextAdapterTask, TextFineTuneTask
from vectorgate.compare.tasks.vit import ViTMnistTask

__all__ = ["CharLMShakespeareTask", "TextAdapterTask", "TextFineTuneTask", "ViTMnistTask"]

register_task("rt_full", lambda: TextFineTuneTask(name="rt_full", dataset="rt"))
register_task("rt_adapt", lambda: TextAdapterTask(name="rt_adapt", dataset="rt"))
# SMS spam is the easier task (shorter texts, near-separable): 60 steps of 16.
register_task("sms_full", lambda: TextFineTuneTask(name="sms_full", dataset="sms", steps=60))
register_task("sms_adapt", lambda: TextAdapterTask(name="sms_adapt", dataset="sms", steps=60))
register_task("vit_mnist", ViTMnistTask)
register_task("charlm_shakespeare", CharLMShakespeareTask)
