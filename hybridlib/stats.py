"""Uncertainty for sweep results: bootstrap confidence intervals and paired tests over query groups.

The unit of resampling is the question *group* (one question id, asked in every language): the
queries of a group share their answer and their translations, so they are not independent and
must be resampled together. Where a sweep point ran with several seeds, a bootstrap replicate also
resamples the seeds, so the interval covers both the choice of questions and training randomness.

Every score is an average of per-query values in the benchmark's own way (``metrics.summarize_scores``):
a mean per cell (query language, corpus language), then a mean over cells. With the cell sums and
counts of each group precomputed, a replicate is two matrix products, so 2,000 replicates over
13,000 queries take well under a second.

    point_estimates = summarize_point(tables)                        # tables: per-query frames of one point's seeds
    interval = bootstrap_ci(tables, "map", "multi")                 # {"mean", "low", "high", "seeds", ...}
    test = paired_test(tables_a, tables_b, "map", "multi")          # {"difference", "low", "high", "p_value"}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .metrics import COLUMNS, MULTI_ONLY


@dataclass
class CellSums:
    """Per (group, cell) sums and counts of one metric: ``value = mean over cells of sums/counts``."""

    groups: pd.Index  # question groups, the resampling unit
    cells: pd.Index  # "query language>corpus language"
    sums: np.ndarray  # [groups, cells]
    counts: np.ndarray  # [groups, cells]

    def score(self, weights: np.ndarray) -> np.ndarray:
        """Scores for group weights [replicates, groups] (all ones: the plain score)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            cells = (weights @ self.sums) / (weights @ self.counts)
        return np.nanmean(cells, axis=-1)


def cell_sums(per_query: pd.DataFrame, metric: str, setting: str, groups: pd.Index | None = None) -> CellSums:
    """Sums and counts per (group, cell) of ``metric`` in ``setting`` for one run's per-query table.

    Cells are (query language, corpus language): one per language for mono and multi, one per ordered
    pair for cross, which is how ``summarize_scores`` averages. Queries with no value (rank distance
    with a single relevant answer) are left out of both sums and counts, as in the report.
    """
    if metric not in COLUMNS:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(COLUMNS)}")
    if metric in MULTI_ONLY and setting != "multi":
        raise ValueError(f"{metric} is defined for the pooled (multi) setting only, not {setting!r}")
    rows = per_query[(per_query["setting"] == setting) & per_query[COLUMNS[metric]].notna()]
    if rows.empty:
        raise ValueError(f"no {metric} values in setting {setting!r}")
    cell = rows["lang"] + ">" + rows["corpus_lang"]
    frame = pd.DataFrame({"group": rows["group"].astype(str).values, "cell": cell.values,
                          "value": rows[COLUMNS[metric]].astype(float).values})
    sums = frame.pivot_table(index="group", columns="cell", values="value", aggfunc="sum", fill_value=0.0)
    counts = frame.pivot_table(index="group", columns="cell", values="value", aggfunc="count", fill_value=0)
    if groups is not None:  # align to a shared group order (paired comparisons, several seeds)
        sums, counts = sums.reindex(groups, fill_value=0.0), counts.reindex(groups, fill_value=0)
    return CellSums(sums.index, sums.columns, sums.to_numpy(float), counts.to_numpy(float))


def _shared_groups(tables: list[pd.DataFrame]) -> pd.Index:
    groups = sorted(set().union(*(set(t["group"].astype(str)) for t in tables)))
    return pd.Index(groups, name="group")


def _group_weights(rng: np.random.Generator, n_groups: int, replicates: int) -> np.ndarray:
    """Multinomial counts: how often each group is drawn in each bootstrap replicate."""
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=replicates).astype(float)


def bootstrap_ci(
    tables: list[pd.DataFrame] | pd.DataFrame,
    metric: str,
    setting: str,
    replicates: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Mean score over seeds with a percentile bootstrap interval (resampling query groups and seeds).

    ``tables``: the per-query tables of one sweep point, one per seed (or a single table).
    Returns mean (the plain score averaged over seeds), low, high, seed_std (spread of the per-seed
    scores; 0 with one seed), seeds, replicates.
    """
    tables = [tables] if isinstance(tables, pd.DataFrame) else list(tables)
    groups = _shared_groups(tables)
    parts = [cell_sums(t, metric, setting, groups) for t in tables]
    per_seed = np.array([float(p.score(np.ones((1, len(groups))))[0]) for p in parts])
    rng = np.random.default_rng(seed)
    weights = _group_weights(rng, len(groups), replicates)
    scores = np.stack([p.score(weights) for p in parts], axis=1)  # [replicates, seeds]
    picks = rng.integers(0, len(parts), size=(replicates, len(parts)))  # seeds drawn with replacement
    replicate_means = np.take_along_axis(scores, picks, axis=1).mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.nanquantile(replicate_means, [alpha, 1 - alpha])
    return {"mean": float(per_seed.mean()), "low": float(low), "high": float(high),
            "seed_std": float(per_seed.std(ddof=1)) if len(parts) > 1 else 0.0,
            "seeds": len(parts), "replicates": replicates, "level": level}


def paired_test(
    tables_a: list[pd.DataFrame] | pd.DataFrame,
    tables_b: list[pd.DataFrame] | pd.DataFrame,
    metric: str,
    setting: str,
    permutations: int = 10000,
    replicates: int = 4000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Is point A's score different from point B's on the same queries? Paired over question groups.

    Two tests, because there are two sources of chance:

    - ``p_randomisation``: a two-sided sign-flip randomisation test over question groups on the seed-averaged
      results. Both points score the same queries, so every cell has the same count for A and B and the
      score difference is a sum of per-group terms ``d_g``; under "no difference" each group's A and B are
      exchangeable. It treats the trained models as fixed: it asks whether *these* models differ.
    - ``p_bootstrap``: a paired two-level bootstrap: question groups resampled jointly for A and B, the
      seeds of A and of B resampled independently; p = twice the smaller tail of the replicate differences
      around 0. It asks whether the *training recipes* differ, training randomness included.

    ``p_value`` is ``p_bootstrap`` when either point has at least two seeds (a point evaluated once, such as
    an untouched model, has no training randomness to resample), else ``p_randomisation`` (``method`` says
    which); the interval [low, high] is always the bootstrap's. With three seeds the seed part of the
    bootstrap draws from three values: a coarse picture of training randomness; more seeds sharpen it.
    Returns difference (A - B, seed means), low, high, p_value, method, p_randomisation, p_bootstrap,
    seeds_a, seeds_b, groups, permutations, replicates.
    """
    tables_a = [tables_a] if isinstance(tables_a, pd.DataFrame) else list(tables_a)
    tables_b = [tables_b] if isinstance(tables_b, pd.DataFrame) else list(tables_b)
    groups = _shared_groups(tables_a + tables_b)
    a = [cell_sums(t, metric, setting, groups) for t in tables_a]
    b = [cell_sums(t, metric, setting, groups) for t in tables_b]
    counts = a[0].counts
    if any(not p.cells.equals(a[0].cells) or not np.array_equal(p.counts, counts) for p in a + b):
        raise ValueError("paired_test needs both points scored on the same queries (same benchmark, languages "
                         "and max_groups)")
    sums_a, sums_b = np.mean([p.sums for p in a], axis=0), np.mean([p.sums for p in b], axis=0)
    cell_total = counts.sum(axis=0)
    valid = cell_total > 0
    # per-group contribution to (score A - score B): the cell mean is a sum over groups / the cell count
    d = ((sums_a - sums_b)[:, valid] / cell_total[valid]).sum(axis=1) / valid.sum()
    observed = float(d.sum())
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(permutations, len(d)))
    flipped = np.abs(signs @ d)
    p_randomisation = (1 + np.count_nonzero(flipped >= abs(observed) - 1e-12)) / (1 + permutations)

    weights = _group_weights(rng, len(groups), replicates)
    scores_a = np.stack([p.score(weights) for p in a], axis=1)  # [replicates, seeds of A]
    scores_b = np.stack([p.score(weights) for p in b], axis=1)
    pick_a = rng.integers(0, len(a), size=(replicates, len(a)))
    pick_b = rng.integers(0, len(b), size=(replicates, len(b)))
    diff = (np.take_along_axis(scores_a, pick_a, axis=1).mean(axis=1)
            - np.take_along_axis(scores_b, pick_b, axis=1).mean(axis=1))
    diff = diff[np.isfinite(diff)]
    p_bootstrap = min(1.0, 2 * max(min(np.mean(diff <= 0), np.mean(diff >= 0)), 1 / len(diff)))
    if observed == 0 and np.all(diff == 0):
        p_bootstrap = 1.0
    alpha = (1 - level) / 2
    low, high = np.quantile(diff, [alpha, 1 - alpha])
    seeded = len(a) > 1 or len(b) > 1
    return {"difference": observed, "low": float(low), "high": float(high),
            "p_value": float(p_bootstrap if seeded else p_randomisation),
            "method": "bootstrap over groups and seeds" if seeded else "randomisation over groups",
            "p_randomisation": float(p_randomisation), "p_bootstrap": float(p_bootstrap),
            "seeds_a": len(a), "seeds_b": len(b), "groups": len(groups), "permutations": permutations,
            "replicates": replicates, "level": level}
