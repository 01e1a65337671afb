"""The one shape every evaluation task has (docs/architecture.md, "Tasks").

A task loads its data as queries, candidates, relevance and languages (``TaskData``), and scores a model on them as
a report (the task's block in metrics.json) plus a per-query table. The per-query table has the columns the
statistics read whatever the task (``hybridlib.evaluation.stats``): ``setting``, ``lang`` (query language),
``corpus_lang``, ``group`` and ``cluster`` (the resampling unit), and one column per metric, named as the metric
(LAReQA's metrics map through ``metrics.COLUMNS``). A score is the mean over the cells (``lang``, ``corpus_lang``) of a
setting of the mean of its queries, so intervals, paired tests and power analysis need no task-specific code.

A task also names the scores worth an interval (``interval_metrics``) and the one its paired tests and the README
lead with (``headline``); the analysis notebooks read those instead of branching on the task's name.
"""

from __future__ import annotations

import pandas as pd

from ...data.task_data import TaskData


class Task:
    """One evaluation task. Subclasses set the class attributes and implement ``load`` and ``evaluate``."""

    name: str = ""
    interval_metrics: tuple[tuple[str, str], ...] = ()  # (metric, setting) pairs that get an interval
    headline: tuple[str, str] = ("", "")  # the (metric, setting) the paired tests and the README lead with

    def languages(self, params: dict) -> list[str]:
        """The languages this task evaluates under ``params``."""
        raise NotImplementedError

    def load(self, params: dict) -> TaskData:
        """Read (download, sha256-check, cache) the task's data as ``params`` select it."""
        raise NotImplementedError

    def evaluate(self, model, data: TaskData, params: dict, progress: bool = True) -> dict:
        """Score ``model`` on ``data``: ``{"metrics": report, "per_query": DataFrame, "timings": {...}}`` and
        optionally ``"tables": {suffix: DataFrame}`` (written as ``<suffix>-<task>.csv.gz`` beside the run)."""
        raise NotImplementedError

    def overlap(self, pairs, data: TaskData) -> dict | None:
        """Training texts found in the task's texts (None: not measured for this task)."""
        from ...data.benchmarks import overlap_report

        return overlap_report(pairs, data)

    def __repr__(self) -> str:
        return f"<task {self.name}>"


PER_QUERY_KEYS = ("setting", "lang", "corpus_lang", "group", "cluster")  # the columns the statistics need


def check_per_query(task: Task, table: pd.DataFrame) -> pd.DataFrame:
    """Refuse a per-query table that lacks a column the statistics read (a task's programming error)."""
    missing = [c for c in PER_QUERY_KEYS if c not in table.columns]
    metrics = {metric for metric, _ in task.interval_metrics}
    from ..metrics import COLUMNS

    missing += [m for m in sorted(metrics) if COLUMNS.get(m, m) not in table.columns]
    if missing:
        raise ValueError(f"task {task.name}: its per-query table lacks {missing}")
    return table
