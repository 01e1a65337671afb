"""Reading a sweep folder back: one row per run, the reference paper's numbers, per-query tables."""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ..evaluation.metrics import GOLD_RANKS, INTERVAL_METRICS, METRICS, MULTI_ONLY, SETTINGS, TOP_IDS
from ..evaluation.tasks import get_task
from ..evaluation.stats import bootstrap_ci, paired_test
from ..records import METRICS_KEYS, DamagedRecord, is_set_aside, read_record


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


# The reference paper's appendix: MIRACL dev (monolingual, each language's full corpus), XLM-R, mean over its 15
# languages (sw bn hi ko th te fi ja es fr ru zh fa ar id). THEIR numbers, for orientation only.
PAPER_MIRACL = pd.DataFrame(
    [("paper: mono only", 1.0, 0.0, 0.4148, 0.7683), ("paper: cross only", 0.0, 1.0, 0.3993, 0.7487),
     ("paper: hybrid 0.5", 0.5, 0.5, 0.4054, 0.7628)],
    columns=["run", "ratio_mono", "ratio_cross", "ndcg@10_mono", "recall@100_mono"],
).set_index("run")


def load_runs(sweep_dir: str | Path) -> list[dict]:
    """Every finished run (a folder with metrics.json) of a sweep, with its folder under ``"path"``.

    A run whose metrics.json cannot be read is skipped with a warning naming it; folders set aside as damaged
    (``<run>.damaged-<time>``, see ``hybridlib.records``) are not runs.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist; run the sweep first (make demo)")
    runs = []
    for path in sorted(sweep_dir.glob("*/metrics.json")):
        if is_set_aside(path.parent):
            continue
        try:
            record = read_record(path, METRICS_KEYS)
        except DamagedRecord as err:
            warnings.warn(f"skipped run {path.parent.name}: {err}", stacklevel=2)
            continue
        record["path"] = path.parent
        record["point"] = record["params"].get("point") or record["run_name"]  # seeds of one point share it
        runs.append(record)
    if not runs:
        raise FileNotFoundError(f"no finished run (*/metrics.json) in {sweep_dir}")
    return runs


def run_label(params: dict) -> str:
    """"mono/cross/multi mix" of a fine-tuned run; "no fine-tuning" for a ``steps: 0`` run (its ratios mean nothing)."""
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
               "mix": params["mix"] if params["steps"] else None, **training_ratios(params)}
        for metric in METRICS:
            for setting in SETTINGS:
                row[f"{metric}_{setting}"] = result[metric][setting]
        row["rank_distance"] = result["rank_distance"]
        row["top10_same_language"] = result.get("top10_same_language")
        probe, centred = result.get("language_probe") or {}, result.get("centred") or {}
        row["language_probe"] = probe.get("accuracy")  # None: recorded before the bias measures existed
        row["map_centred_multi"] = (centred.get("map") or {}).get("multi")
        row["rank_distance_centred"] = centred.get("rank_distance")
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
    # the id lists are text: read in chunks, a column whose first rows hold one number each would otherwise get
    # a guessed mixed type (pandas' DtypeWarning on the 600-group tables); runs recorded before the column got
    # the report's name call it top10_same_lang
    table = pd.read_csv(path, dtype={TOP_IDS: str, GOLD_RANKS: str})
    return table.rename(columns={"top10_same_lang": "top10_same_language"})


def projection(run: dict, benchmark: str, kind: str = "pca") -> pd.DataFrame | None:
    """The run's candidates in two dimensions: ``kind="pca"`` (``pc1``, ``pc2``) or ``"lda"``, on linear discriminant
    axes over the languages (``ld1``, ``ld2``; None for a run recorded before the LDA projection existed)."""
    if kind not in ("pca", "lda"):
        raise ValueError(f"projection kind {kind!r}: choose 'pca' or 'lda'")
    path = Path(run["path"]) / (f"projection-{benchmark}.csv.gz" if kind == "pca" else f"projection-lda-{benchmark}.csv.gz")
    if kind == "lda" and not path.is_file():
        return None
    return pd.read_csv(path)


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


def point_scores(runs: list[dict], benchmark: str, metrics=None, replicates: int = 2000) -> pd.DataFrame:
    """One row per sweep point: seeds, ratios, and per metric its mean over seeds with a 95% bootstrap
    interval (columns ``<key>``, ``<key>_low``, ``<key>_high``, ``<key>_seed_std``), resampling query groups
    and seeds (``stats.bootstrap_ci``). ``benchmark``: any task; ``metrics``: (metric, setting) pairs, by default
    the ones its task names (``Task.interval_metrics``)."""
    metrics = get_task(benchmark).interval_metrics if metrics is None else metrics
    rows = []
    for point, members in runs_by_point(runs, benchmark).items():
        params = members[0]["params"]
        tables = [per_query(run, benchmark) for run in members]
        row = {"point": point, "label": run_label(params), "steps": params["steps"], "seeds": len(members),
               **training_ratios(params)}
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
        out[key] = interval_cells(points, key, 1 if metric.startswith("rank_distance") else digits)
    return out


def paired_tests(runs: list[dict], benchmark: str, metric: str | None = None, setting: str | None = None,
                 permutations: int = 10000) -> pd.DataFrame:
    """Every pair of sweep points (A before B in sweep order): A - B with a paired bootstrap interval and
    p-values (``stats.paired_test``: bootstrap over question groups and seeds where either point has
    several seeds, else a randomisation test over question groups). ``metric`` and ``setting``: by default the
    task's headline (LAReQA: pooled mAP; Tatoeba: en->xx accuracy; MIRACL: nDCG@10)."""
    if metric is None:
        metric, setting = get_task(benchmark).headline
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


def p_values_against(tests: pd.DataFrame, reference: str, points) -> list:
    """For each point, the p-value of its paired test with ``reference`` (None for the reference itself)."""
    found = {}
    for row in tests.itertuples():
        if reference in (row.a, row.b):
            found[row.b if row.a == reference else row.a] = row.p_value
    return [found.get(point) for point in points]


# --- untrained points, language bias (hybridlib.evaluation.bias) --------------------------------------------------------


def training_ratios(params: dict) -> dict:
    """``ratio_mono/cross/multi`` of a run; NaN for a ``steps: 0`` run, which draws no batches (not trained)."""
    return {f"ratio_{k}": params[f"ratio_{k}"] if params["steps"] else float("nan") for k in SETTINGS}


def interval_cells(table: pd.DataFrame, key: str, digits: int = 3) -> list[str]:
    """``"mean [low, high]"`` per row from the columns ``key``, ``key_low``, ``key_high`` ("n/a" where missing)."""
    def cell(m, lo, hi):
        if pd.isna(m):
            return "n/a"
        return f"{m:.{digits}f}" if pd.isna(lo) or pd.isna(hi) else f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"

    return [cell(m, lo, hi) for m, lo, hi in zip(table[key], table[f"{key}_low"], table[f"{key}_high"])]


def has_bias_measures(runs: list[dict], benchmark: str) -> bool:
    """Whether every run on ``benchmark`` recorded the probe and the centring (runs from before they existed did not)."""
    results = [run["benchmarks"][benchmark] for run in runs if benchmark in run["benchmarks"]]
    return bool(results) and all(r.get("language_probe") is not None and "centred" in r for r in results)


def probe_scores(runs: list[dict], benchmark: str) -> pd.DataFrame:
    """One row per sweep point: the language-identity probe's accuracy (mean over seeds), its 95% interval and
    chance level.

    The interval is the Wilson interval over the candidates at the seed-mean accuracy (the seeds share the
    candidates); ``language_probe_seed_std`` is the spread of the seeds. Points without a probe are left out.
    """
    from ..evaluation.bias import wilson_interval

    rows = []
    for point, members in runs_by_point(runs, benchmark).items():
        probes = [run["benchmarks"][benchmark].get("language_probe") for run in members]
        if any(p is None for p in probes):
            continue
        accuracy = [p["accuracy"] for p in probes]
        mean, n = sum(accuracy) / len(accuracy), probes[0]["candidates"]
        low, high = wilson_interval(round(mean * n), n)
        params = members[0]["params"]
        rows.append({"point": point, "label": run_label(params), "steps": params["steps"], "seeds": len(members),
                     **training_ratios(params), "language_probe": mean, "language_probe_low": low,
                     "language_probe_high": high, "language_probe_seed_std": pd.Series(accuracy).std(ddof=1)
                     if len(accuracy) > 1 else 0.0, "chance": probes[0]["chance"], "folds": probes[0]["folds"],
                     "candidates": n, "split": probes[0]["split"]})
    return pd.DataFrame(rows).set_index("point") if rows else pd.DataFrame()


def probe_per_language(runs: list[dict], benchmark: str) -> pd.DataFrame:
    """Long table (run, point, lang, setting="probe", value): the probe's accuracy per candidate language."""
    rows = [(run["run_name"], run["point"], lang, "probe", value)
            for run in runs if (run["benchmarks"].get(benchmark) or {}).get("language_probe")
            for lang, value in run["benchmarks"][benchmark]["language_probe"]["per_language"].items()]
    return pd.DataFrame(rows, columns=["run", "point", "lang", "setting", "value"])


CENTRING_MEASURES = ("map_mono", "map_multi", "map_mono_centred", "map_multi_centred", "map_multi_gain", "map_gap",
                     "map_gap_centred", "map_gap_closed", "rank_distance", "rank_distance_centred",
                     "rank_distance_removed")


def centring_effect(runs: list[dict], benchmark: str, replicates: int = 2000, level: float = 0.95,
                    seed: int = 0) -> pd.DataFrame:
    """One row per sweep point: what per-language mean-centring (``hybridlib.evaluation.bias``) changes, with 95% intervals.

    Columns (each with ``_low`` / ``_high``): map_mono, map_multi and their centred values, map_multi_gain
    (centred - plain pooled mAP), map_gap (mono - pooled mAP), map_gap_centred, map_gap_closed (1 - centred gap /
    gap: the share of the gap that disappears), rank_distance, rank_distance_centred, rank_distance_removed
    (1 - centred / plain). Intervals: a percentile bootstrap that resamples question clusters and seeds as
    ``stats.bootstrap_ci`` does, the same draws for every measure of a point (so the derived shares are paired).
    Points whose runs lack the centred columns are left out.
    """
    import numpy as np

    from ..evaluation.stats import bootstrap_draws, cell_sums, replicate_means, shared_units

    parts_of = {"map_mono": ("map", "mono"), "map_multi": ("map", "multi"), "map_mono_centred": ("map_centred", "mono"),
                "map_multi_centred": ("map_centred", "multi"), "rank_distance": ("rank_distance", "multi"),
                "rank_distance_centred": ("rank_distance_centred", "multi")}
    alpha = (1 - level) / 2
    rows = []
    for point, members in runs_by_point(runs, benchmark).items():
        tables = [per_query(run, benchmark) for run in members]
        if not all("ap_centred" in t for t in tables):
            continue
        groups = shared_units(tables)  # the resampling units (paragraph clusters where recorded)
        draws = bootstrap_draws(len(groups), len(tables), replicates, seed)  # the same draws for every measure
        values = {}
        for name, (metric, setting) in parts_of.items():
            parts = [cell_sums(t, metric, setting, groups) for t in tables]
            plain = np.mean([p.score(np.ones((1, len(groups))))[0] for p in parts])
            values[name] = np.concatenate([[plain], replicate_means(parts, *draws)])
        with np.errstate(invalid="ignore", divide="ignore"):
            values["map_multi_gain"] = values["map_multi_centred"] - values["map_multi"]
            values["map_gap"] = values["map_mono"] - values["map_multi"]
            values["map_gap_centred"] = values["map_mono_centred"] - values["map_multi_centred"]
            values["map_gap_closed"] = 1 - values["map_gap_centred"] / values["map_gap"]
            values["rank_distance_removed"] = 1 - values["rank_distance_centred"] / values["rank_distance"]
        params = members[0]["params"]
        row = {"point": point, "label": run_label(params), "steps": params["steps"], "seeds": len(members),
               **training_ratios(params)}
        for name in CENTRING_MEASURES:
            replicated = values[name][1:]
            finite = replicated[np.isfinite(replicated)]  # a share is undefined in a replicate without a gap
            low, high = np.quantile(finite, [alpha, 1 - alpha]) if len(finite) else (np.nan, np.nan)
            row.update({name: float(values[name][0]), f"{name}_low": float(low), f"{name}_high": float(high)})
        rows.append(row)
    return pd.DataFrame(rows).set_index("point") if rows else pd.DataFrame()


def centring_summary(effect: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``centring_effect`` as text cells "value [low, high]" for reading."""
    out = effect[["label", "seeds"]].copy()
    for name in CENTRING_MEASURES:
        out[name] = interval_cells(effect, name, 1 if name in ("rank_distance", "rank_distance_centred") else digits)
    return out


