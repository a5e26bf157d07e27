"""``vectorgate-lab compare``: residual variants side by side on real tasks.

Tasks x variants x seeds at equal steps and data order; every run appended to
``runs.jsonl``; a markdown table and plots summarise them. Add a task by subclassing
:class:`Task` (or :class:`ClassificationTask`) and calling :func:`register_task`.
"""

from __future__ import annotations

from vectorgate_lab.compare import tasks as _builtin_tasks  # noqa: F401  (registers the built-in tasks)
from vectorgate_lab.compare.report import summarise, write_markdown, write_plots
from vectorgate_lab.compare.runner import load_runs, run_comparison, run_one
from vectorgate_lab.compare.spec import VariantSpec, parse_variant
from vectorgate_lab.compare.task import TASKS, ClassificationTask, Task, register_task

__all__ = [
    "TASKS",
    "ClassificationTask",
    "Task",
    "VariantSpec",
    "load_runs",
    "parse_variant",
    "register_task",
    "run_comparison",
    "run_one",
    "summarise",
    "write_markdown",
    "write_plots",
]
