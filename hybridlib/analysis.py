"""Reading a sweep folder back: one row per run, the reference paper's numbers, per-query tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .metrics import METRICS, SETTINGS

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
        row = {"run": run["run_name"], "label": run_label(params), "steps": params["steps"], "seed": params["seed"],
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
            for setting in SETTINGS:
                rows.append((run["run_name"], lang, setting, values[metric][setting]))
            rows.append((run["run_name"], lang, "rank_distance", values["rank_distance"]))
            rows.append((run["run_name"], lang, "top10_same_language", values.get("top10_same_language")))
    return pd.DataFrame(rows, columns=["run", "lang", "setting", "value"])


def pairs_matrix(run: dict, benchmark: str) -> pd.DataFrame:
    """Query language x corpus language mAP (diagonal = mono)."""
    pairs = run["benchmarks"][benchmark]["pairs"]
    langs = sorted(pairs)
    return pd.DataFrame([[pairs[x].get(y) for y in langs] for x in langs], index=langs, columns=langs, dtype=float)


def per_query(run: dict, benchmark: str) -> pd.DataFrame:
    return pd.read_csv(Path(run["path"]) / f"per_query-{benchmark}.csv.gz")


def projection(run: dict, benchmark: str) -> pd.DataFrame:
    return pd.read_csv(Path(run["path"]) / f"projection-{benchmark}.csv.gz")
