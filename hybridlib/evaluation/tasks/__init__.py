"""Evaluation tasks behind one interface (``base.Task``): XQuAD-R and MLQA-R (LAReQA), Tatoeba, MIRACL dev.

    task = get_task("tatoeba")
    data = task.load(params)                     # queries, candidates, relevance, languages
    result = task.evaluate(model, data, params)  # {"metrics": report, "per_query": table, "timings", "tables"}
"""

from __future__ import annotations

from ...data.pinned import TASK_NAMES
from .base import Task, TaskData, check_per_query

__all__ = ["Task", "TaskData", "check_per_query", "get_task", "report_value", "TASK_NAMES"]


def get_task(name: str) -> Task:
    """The task called ``name`` (one of ``TASK_NAMES``)."""
    if name in ("xquad-r", "mlqa-r"):
        from .lareqa import LareqaTask

        return LareqaTask(name)
    if name == "tatoeba":
        from .tatoeba import TatoebaTask

        return TatoebaTask()
    if name == "miracl":
        from .miracl import MiraclTask

        return MiraclTask()
    raise ValueError(f"unknown task {name!r}; choose from {list(TASK_NAMES)}")


def report_value(report: dict, metric: str, setting: str):
    """One score of a task's report: ``report[metric][setting]``, or ``report[metric]`` for a pooled-only metric
    (LAReQA's rank distance and same-language share); None where the report lacks it."""
    value = report.get(metric)
    return value.get(setting) if isinstance(value, dict) else value
