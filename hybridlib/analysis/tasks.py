"""Any task's scores read the same way: the (metric, setting) pairs its task names (``Task.interval_metrics``).

The notebooks show every task of a sweep through these, with no code of their own per task.
"""

from __future__ import annotations

import pandas as pd

from ..evaluation.tasks import get_task, report_value
from .results import metric_key, run_label, training_ratios


def report_scores(task: str, report: dict) -> dict:
    """``{metric_key: value}`` of a task's report (its block in metrics.json), for the scores its task names."""
    return {metric_key(m, s): report_value(report, m, s) for m, s in get_task(task).interval_metrics}


def report_per_language(task: str, report: dict) -> pd.DataFrame:
    """One row per language of a task's report, the same scores as ``report_scores`` (columns with no value in any
    language, such as LAReQA's pooled-only share per language, are left out)."""
    rows = {lang: report_scores(task, values) for lang, values in report.get("per_language", {}).items()}
    return pd.DataFrame(rows).T.dropna(axis=1, how="all")


def task_scores(runs: list[dict], task: str) -> pd.DataFrame:
    """One row per run evaluated on ``task``: point, seed, ratios and the task's scores (no intervals)."""
    rows = []
    for run in runs:
        report = run["benchmarks"].get(task)
        if report is None:
            continue
        params = run["params"]
        rows.append({"run": run["run_name"], "point": run["point"], "label": run_label(params), "seed": params["seed"],
                     "steps": params["steps"], **training_ratios(params), **report_scores(task, report)})
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()


def sweep_tasks(runs: list[dict]) -> list[str]:
    """The tasks the runs of a sweep were evaluated on, in the order the runs name them."""
    return list(dict.fromkeys(name for run in runs for name in run["benchmarks"]))
