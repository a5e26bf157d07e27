"""The built-in comparison tasks, all on real offline data (see ``vectorgate.assets``)."""

from __future__ import annotations

from vectorgate.compare.task import register_task
from vectorgate.compare.tasks.bert import BertGatesVsLoraTask, BertRottenTomatoesTask
from vectorgate.compare.tasks.charlm import CharLMShakespeareTask
from vectorgate.compare.tasks.vit import ViTMnistTask

__all__ = ["BertGatesVsLoraTask", "BertRottenTomatoesTask", "CharLMShakespeareTask", "ViTMnistTask"]

register_task("bert_rt", BertRottenTomatoesTask)
register_task("bert_rt_gates_vs_lora", BertGatesVsLoraTask)
register_task("vit_mnist", ViTMnistTask)
register_task("charlm_shakespeare", CharLMShakespeareTask)
