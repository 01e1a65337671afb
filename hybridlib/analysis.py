"""Reading a sweep folder back: one row per run, the reference paper's numbers, per-query tables."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pandas as pd

from .metrics import METRICS, MULTI_ONLY, SETTINGS
from .stats import bootstrap_ci, paired_test

# (metric, setting) pairs that get a bootstrap interval in the evaluation notebook
INTERVAL_METRICS = [("map", "mono"), ("map", "cross"), ("map", "multi"), ("map@20", "multi"),
                    ("recall@10", "multi"), ("rank_distance", "multi"), ("top10_same_language", "multi")]

# Reference paper (arXiv 2408.10536), XLM-R fine-tuned on their in-house data, macro mAP.
# THEIR numbers, not ours: different model size, data and scale; shown for orientation only.
PAPER_REFERENCE = pd.DataFrame(
    [
        ("paper: mono only", 1.0, 0.0, "xquad-r", 0.792, 0.674, 0.547, 410.2),
        ("paper: cross only", 0.0, 1.0, "xquad-r", 0.755, 0.700, 0.593, 295.4),
        ("paper: hybrid 0.5", 0.5, 0.5, "xquad-r", 0.798, 0.705, 0.593, 286.6),
        ("paper: mono only", 1.0, 0.0, "mlqa-r", 0.648, 0.584, 0.473, 287.5),
        ("paper: cross only", 0.0, 1.0, "mlqa-r", 0.626, 0.620, 0.508, 226.7),
        ("paper: hybrid 0.5", 0.5, 0.5, "mlqa-r", 0.648, 0.623, 0.512, 227.1),
    ],
    columns=["run", "ratio_mono", "ratio_cross", "benchmark", "map_mono", "map_cross", "map_multi", "rank_distance"],
)


def find_project_root(start: str | Path | None = None) -> Path:
    """The nearest folder above ``start`` (default: the working directory) holding notebooks/ and params/."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "params").is_dir():
            return folder
    raise FileNotFoundError(f"no project root (a folder with notebooks/ and params/) above {here}")


def load_runs(sweep_dir: str | Path) -> list[dict]:
    """Every finished run (a folder with metrics.json) of a sweep, with its folder under ``"path"``."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist; run the sweep first (make demo)")
    runs = []
    for path in sorted(sweep_dir.glob("*/metrics.json")):
        record = json.loads(path.read_text())
        record["path"] = path.parent
        record["point"] = record["params"].get("point") or record["run_name"]  # seeds of one point share it
        runs.append(record)
    if not runs:
        raise FileNotFoundError(f"no finished run (*/metrics.json) in {sweep_dir}")
    return runs


def run_label(params: dict) -> str:
    if params["steps"] == 0:
        return "no fine-tuning"
    return f"{params['ratio_mono']:.2g}/{params['ratio_cross']:.2g}/{params['ratio_multi']:.2g} {params['mix']}"


def scores_table(runs: list[dict], benchmark: str) -> pd.DataFrame:
    """One row per run: ratios, every metric in every setting, rank distance and top-10 language share."""
    rows = []
    for run in runs:
        if benchmark not in run["benchmarks"]:
            continue
        params, result = run["params"], run["benchmarks"][benchmark]
        row = {"run": run["run_name"], "point": run["point"], "label": run_label(params), "steps": params["steps"], "seed": params["seed"],
               "mix": params["mix"], **{f"ratio_{k}": params[f"ratio_{k}"] for k in SETTINGS}}
        for metric in METRICS:
            for setting in SETTINGS:
                row[f"{metric}_{setting}"] = result[metric][setting]
        row["rank_distance"] = result["rank_distance"]
        row["top10_same_language"] = result.get("top10_same_language")
        row["train_seconds"] = run["timings"].get("train_seconds")
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")


def per_language_table(runs: list[dict], benchmark: str, metric: str = "map") -> pd.DataFrame:
    """Long table: run, query language, setting, value (plus rank distance and top-10 share as settings)."""
    rows = []
    for run in runs:
        result = run["benchmarks"].get(benchmark)
        if result is None:
            continue
        for lang, values in result["per_language"].items():
            key = (run["run_name"], run["point"], lang)
            for setting in SETTINGS:
                rows.append((*key, setting, values[metric][setting]))
            rows.append((*key, "rank_distance", values["rank_distance"]))
            rows.append((*key, "top10_same_language", values.get("top10_same_language")))
    return pd.DataFrame(rows, columns=["run", "point", "lang", "setting", "value"])


def pairs_matrix(run: dict, benchmark: str) -> pd.DataFrame:
    """Query language x corpus language mAP (diagonal = mono)."""
    pairs = run["benchmarks"][benchmark]["pairs"]
    langs = sorted(pairs)
    return pd.DataFrame([[pairs[x].get(y) for y in langs] for x in langs], index=langs, columns=langs, dtype=float)


def per_query(run: dict, benchmark: str) -> pd.DataFrame:
    """The run's per-query table (read once per process: intervals and every paired test reuse it; treat
    it as read-only)."""
    path = Path(run["path"]) / f"per_query-{benchmark}.csv.gz"
    return _read_table(str(path), path.stat().st_mtime_ns)  # a rewritten run is read again


@lru_cache(maxsize=128)
def _read_table(path: str, mtime_ns: int) -> pd.DataFrame:
    # runs recorded before the column got the report's name call it top10_same_lang
    return pd.read_csv(path).rename(columns={"top10_same_lang": "top10_same_language"})


def projection(run: dict, benchmark: str) -> pd.DataFrame:
    return pd.read_csv(Path(run["path"]) / f"projection-{benchmark}.csv.gz")


def metric_key(metric: str, setting: str) -> str:
    """Column name of a (metric, setting) pair in the tables: ``map_multi``; ``rank_distance`` as is."""
    return metric if metric in MULTI_ONLY else f"{metric}_{setting}"


def runs_by_point(runs: list[dict], benchmark: str) -> dict[str, list[dict]]:
    """The runs evaluated on ``benchmark``, grouped by sweep point (its seeds), in sweep order."""
    points: dict[str, list[dict]] = {}
    for run in runs:
        if benchmark in run["benchmarks"]:
            points.setdefault(run["point"], []).append(run)
    return points


def point_scores(runs: list[dict], benchmark: str, metrics=INTERVAL_METRICS, replicates: int = 2000) -> pd.DataFrame:
    """One row per sweep point: seeds, ratios, and per metric its mean over seeds with a 95% bootstrap
    interval (columns ``<key>``, ``<key>_low``, ``<key>_high``, ``<key>_seed_std``), resampling query groups
    and seeds (``stats.bootstrap_ci``)."""
    rows = []
    for point, members in runs_by_point(runs, benchmark).items():
        params = members[0]["params"]
        tables = [per_query(run, benchmark) for run in members]
        row = {"point": point, "label": run_label(params), "steps": params["steps"], "seeds": len(members),
               **{f"ratio_{k}": params[f"ratio_{k}"] for k in SETTINGS}}
        for metric, setting in metrics:
            ci = bootstrap_ci(tables, metric, setting, replicates=replicates)
            key = metric_key(metric, setting)
            row.update({key: ci["mean"], f"{key}_low": ci["low"], f"{key}_high": ci["high"],
                        f"{key}_seed_std": ci["seed_std"]})
        rows.append(row)
    return pd.DataFrame(rows).set_index("point")


def with_intervals(points: pd.DataFrame, metrics=INTERVAL_METRICS, digits: int = 3) -> pd.DataFrame:
    """The point table as text cells "mean [low, high]" for reading (one column per metric)."""
    out = points[["label", "seeds"]].copy()
    for metric, setting in metrics:
        key = metric_key(metric, setting)
        d = 1 if metric == "rank_distance" else digits
        out[key] = [f"{m:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"
                    for m, lo, hi in zip(points[key], points[f"{key}_low"], points[f"{key}_high"])]
    return out


def paired_tests(runs: list[dict], benchmark: str, metric: str = "map", setting: str = "multi",
                 permutations: int = 10000) -> pd.DataFrame:
    """Every pair of sweep points (A before B in sweep order): A - B with a paired bootstrap interval and
    p-values (``stats.paired_test``: bootstrap over question groups and seeds where either point has
    several seeds, else a randomisation test over question groups)."""
    points = runs_by_point(runs, benchmark)
    tables = {point: [per_query(run, benchmark) for run in members] for point, members in points.items()}
    names = list(tables)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            test = paired_test(tables[a], tables[b], metric, setting, permutations=permutations)
            rows.append({"a": a, "b": b, **test})
    columns = ["a", "b", "difference", "low", "high", "p_value", "method", "p_randomisation", "p_bootstrap",
               "seeds_a", "seeds_b", "groups", "permutations", "replicates", "level"]
    return pd.DataFrame(rows, columns=columns)  # empty (with its columns) for a single point


def p_value_matrix(tests: pd.DataFrame) -> pd.DataFrame:
    """Symmetric point x point matrix of the p-values (column ``p_value``) of ``paired_tests``."""
    names = list(dict.fromkeys([*tests["a"], *tests["b"]]))
    matrix = pd.DataFrame(float("nan"), index=names, columns=names)
    for row in tests.itertuples():
        matrix.loc[row.a, row.b] = matrix.loc[row.b, row.a] = row.p_value
    return matrix


def mean_pairs_matrix(members: list[dict], benchmark: str) -> pd.DataFrame:
    """Query x corpus language mAP averaged over the seeds of one point."""
    return sum(pairs_matrix(run, benchmark) for run in members) / len(members)


def holm(p_values) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error across all the pairwise tests shown)."""
    p = pd.Series(list(p_values), dtype=float)
    order = p.sort_values().index
    m = len(p)
    adjusted = pd.Series(index=p.index, dtype=float)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def p_values_against(tests: pd.DataFrame, reference: str, points) -> list:
    """For each point, the p-value of its paired test with ``reference`` (None for the reference itself)."""
    found = {}
    for row in tests.itertuples():
        if reference in (row.a, row.b):
            found[row.b if row.a == reference else row.a] = row.p_value
    return [found.get(point) for point in points]
