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


def task_overview(runs: list[dict], task: str, replicates: int = 2000, permutations: int = 10000) -> dict:
    """Everything 03 shows for any task: ``points`` (``point_scores`` with the task's scores and intervals),
    ``tests`` (paired tests of every pair of points on the task's headline, Holm-adjusted in ``p_holm``),
    ``summary`` (the scores as "mean [low, high]" cells, with the p-value against the best point on the headline),
    ``headline`` (its ``metric_key``) and ``best`` (the point with the best headline)."""
    from ..evaluation.stats import holm
    from .alpha import lower_is_better
    from .results import p_values_against, paired_tests, point_scores, with_intervals

    spec = get_task(task)
    points = point_scores(runs, task, replicates=replicates)
    tests = paired_tests(runs, task, permutations=permutations)
    tests["p_holm"] = holm(tests["p_value"])
    key = metric_key(*spec.headline)
    best = points[key].idxmin() if lower_is_better(key) else points[key].idxmax()
    summary = with_intervals(points, spec.interval_metrics)
    summary[f"p vs best ({best})"] = p_values_against(tests, best, points.index)
    order = points[key].sort_values(ascending=lower_is_better(key)).index
    return {"points": points, "tests": tests, "summary": summary.loc[order], "headline": key, "best": best}


def ordering_agreement(first: dict, second: dict, level: float = 0.05) -> dict:
    """Does the ordering of the sweep's points on one task hold on another? ``first`` and ``second``: two
    ``task_overview`` results. Compares the fine-tuned points both tasks scored.

    Returns ``table`` (per point: each task's headline and its rank), ``kendall_tau`` with its p-value (the rank
    correlation of the point means), and ``pairs`` (every pair of points: the sign of the difference on each task,
    whether each paired test is significant after Holm, and ``agree`` / ``reversed`` where both are significant)."""
    from scipy.stats import kendalltau

    a, b = first["points"], second["points"]
    points = [p for p in a.index if p in b.index and a.loc[p, "steps"] > 0]
    table = pd.DataFrame({"label": a.loc[points, "label"], "first": a.loc[points, first["headline"]],
                          "second": b.loc[points, second["headline"]]})
    table["rank_first"] = table["first"].rank(ascending=False)
    table["rank_second"] = table["second"].rank(ascending=False)
    tau, p_value = kendalltau(table["first"], table["second"]) if len(table) > 1 else (float("nan"), float("nan"))
    tests = {name: overview["tests"].set_index(["a", "b"]) for name, overview in (("first", first), ("second", second))}
    rows = []
    for (x, y) in tests["first"].index:
        if x not in points or y not in points or (x, y) not in tests["second"].index:
            continue
        row = {"a": x, "b": y}
        for name in ("first", "second"):
            test = tests[name].loc[(x, y)]
            row[f"difference_{name}"] = test["difference"]
            row[f"significant_{name}"] = bool(test["p_holm"] < level)
        both = row["significant_first"] and row["significant_second"]
        same = (row["difference_first"] > 0) == (row["difference_second"] > 0)
        row["reading"] = ("agree" if same else "reversed") if both else "not both significant"
        rows.append(row)
    return {"table": table.rename(columns={"first": first["headline"], "second": second["headline"]}),
            "kendall_tau": float(tau), "kendall_p": float(p_value), "pairs": pd.DataFrame(rows)}
