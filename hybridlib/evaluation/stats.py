"""Uncertainty for sweep results: bootstrap confidence intervals and paired tests over query groups.

The unit of resampling is the *cluster* of questions asked on one paragraph (per-query column ``cluster``:
the paragraph of the gold, ``metrics.gold_paragraph``): the queries of a question group share their answer
and its translations, and the groups of one paragraph share their candidate sentences, so neither is
independent of the others and they are resampled together (with the demo's slice, 200 groups on 35
paragraphs, resampling groups instead made intervals about sqrt(2) too narrow). Tables recorded before
that column existed fall back to question groups (``resampling_unit``). Below, "group" means the
resampling unit. Where a sweep point ran with several seeds, a bootstrap replicate also resamples the
seeds, so the interval covers both the choice of questions and training randomness.

Every score is an average of per-query values in the benchmark's own way (``metrics.summarize_scores``):
a mean per cell (query language, corpus language), then a mean over cells. With the cell sums and
counts of each group precomputed, a replicate is two matrix products, so 2,000 replicates over
13,000 queries take well under a second.

    point_estimates = summarize_point(tables)                        # tables: per-query frames of one point's seeds
    interval = bootstrap_ci(tables, "map", "multi")                 # {"mean", "low", "high", "seeds", ...}
    test = paired_test(tables_a, tables_b, "map", "multi")          # {"difference", "low", "high", "p_value"}

Power analysis (below the tests): the variance components of a paired difference (question groups, seeds and
their interaction), the minimal detectable difference of a design, and the seeds and groups a target needs.

    components = variance_components(tables_a, tables_b, "map", "multi")
    minimal_detectable_difference(components)                      # this design, 80% power, alpha 0.05
    required_design(components, 0.01, max_groups=1190)              # fewest groups per number of seeds
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .metrics import COLUMNS, MULTI_ONLY

Z_95 = 1.959963984540054  # the two-sided 95% normal quantile


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
    column = COLUMNS.get(metric, metric)  # LAReQA's metrics have their own column names; other tasks' are the metric
    if column not in per_query.columns:
        raise ValueError(f"unknown metric {metric!r} for this table; it has {sorted(COLUMNS)} (LAReQA) or its task's "
                         "own metric columns")
    if metric in MULTI_ONLY and setting != "multi":
        raise ValueError(f"{metric} is defined for the pooled (multi) setting only, not {setting!r}")
    rows = per_query[(per_query["setting"] == setting) & per_query[column].notna()]
    if rows.empty:
        raise ValueError(f"no {metric} values in setting {setting!r}")
    cell = rows["lang"] + ">" + rows["corpus_lang"]
    unit = groups.name if groups is not None and groups.name else resampling_unit([per_query])
    frame = pd.DataFrame({"group": rows[unit].astype(str).values, "cell": cell.values,
                          "value": rows[column].astype(float).values})
    sums = frame.pivot_table(index="group", columns="cell", values="value", aggfunc="sum", fill_value=0.0)
    counts = frame.pivot_table(index="group", columns="cell", values="value", aggfunc="count", fill_value=0)
    if groups is not None:  # align to a shared group order (paired comparisons, several seeds)
        sums, counts = sums.reindex(groups, fill_value=0.0), counts.reindex(groups, fill_value=0)
    return CellSums(sums.index, sums.columns, sums.to_numpy(float), counts.to_numpy(float))


def resampling_unit(tables: list[pd.DataFrame]) -> str:
    """``"cluster"`` (questions on one paragraph) where every table has that column, else ``"group"``."""
    return "cluster" if all("cluster" in t.columns for t in tables) else "group"


def shared_units(tables: list[pd.DataFrame]) -> pd.Index:
    unit = resampling_unit(tables)
    return pd.Index(sorted(set().union(*(set(t[unit].astype(str)) for t in tables))), name=unit)


def _group_weights(rng: np.random.Generator, n_groups: int, replicates: int) -> np.ndarray:
    """Multinomial counts: how often each group is drawn in each bootstrap replicate."""
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=replicates).astype(float)


def bootstrap_draws(groups: int, seeds: int, replicates: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The draws of one bootstrap over groups and seeds: how often each group is drawn in each replicate
    ``[replicates, groups]``, and which seeds each replicate takes, with replacement ``[replicates, seeds]``."""
    rng = np.random.default_rng(seed)
    weights = _group_weights(rng, groups, replicates)
    return weights, rng.integers(0, seeds, size=(replicates, seeds))


def replicate_means(parts: list[CellSums], weights: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """The score of every bootstrap replicate: each seed's score under the group draws, averaged over the seeds
    the replicate picked."""
    scores = np.stack([p.score(weights) for p in parts], axis=1)  # [replicates, seeds]
    return np.take_along_axis(scores, picks, axis=1).mean(axis=1)


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
    groups = shared_units(tables)
    parts = [cell_sums(t, metric, setting, groups) for t in tables]
    per_seed = np.array([float(p.score(np.ones((1, len(groups))))[0]) for p in parts])
    means = replicate_means(parts, *bootstrap_draws(len(groups), len(parts), replicates, seed))
    alpha = (1 - level) / 2
    low, high = np.nanquantile(means, [alpha, 1 - alpha])
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
    groups = shared_units(tables_a + tables_b)
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


# --- power analysis -------------------------------------------------------------------------------
#
# The model, on the same per-group decomposition as ``paired_test``. For one run the score is a sum of per-group
# terms x_g (a cell mean is a sum over groups divided by the cell's count), so score = mean over groups of
# y_g = G x_g, the group's contribution on the scale of a score (for XQuAD-R, where every group has one query
# per language, y_g is the mean of the group's values over the cells). For run s (a seed) of point p:
#
#     y_pgs = mu_p + u_g + v_pg + t_ps + w_pgs
#
# u_g: how hard group g is for every point (cancels in a paired difference); v_pg: point x group interaction,
# var(v_Ag - v_Bg) = sigma2_group; t_ps: the seed's shift of the whole score, var sigma2_seed (per point);
# w_pgs: group x seed residual, var sigma2_residual (per point). Independent random effects: per point a
# two-way (groups x seeds) random-effects layout with one value per cell; groups are crossed with the points,
# seeds nested in them (seed s of A and seed s of B are different draws, as the test treats them). The
# difference D of the seed-averaged scores over G groups with n_A and n_B seeds has variance
#
#     var(D) = sigma2_group / G + sum over p in (A, B) of (sigma2_seed_p + sigma2_residual_p / G) / n_p
#
# Method-of-moments (ANOVA) estimators, per point from its G x n table of y:
#     MS_res  = sum (y_gs - ybar_g. - ybar_.s + ybar_..)^2 / ((G - 1)(n - 1))    E = sigma2_residual
#     MS_seed = G sum (ybar_.s - ybar_..)^2 / (n - 1)                            E = sigma2_residual + G sigma2_seed
# and for the pair from the seed-averaged differences d_g = ybar_Ag. - ybar_Bg.:
#     var_g(d_g) (ddof 1)                                  E = sigma2_group + sum_p sigma2_residual_p / n_p
# so sigma2_residual = MS_res, sigma2_seed = (MS_seed - MS_res) / G, sigma2_group = var_g(d_g) - sum MS_res_p / n_p.
# The estimates are unbiased and can be negative when a component is small against its sampling noise; they are
# kept as estimated (averages over pairs stay unbiased) and clipped at 0 where a variance is formed. A point run
# once (an untouched model, or a single seed) has no seed terms: as in ``paired_test`` its run is taken as fixed,
# so a pair of single runs gets the power of the randomisation test over groups.
#
# What the project's test sees. ``paired_test``'s bootstrap resamples groups (weights w_g) for every seed and then
# n_p of the seeds with replacement (counts c_s). Under the model its replicate variance has the expectation
#
#     sigma2_group / G + sum_p [ sigma2_seed_p (n_p - 1) / n_p^2 + sigma2_residual_p (3 n_p - 2) / (n_p^2 G) ]
#
# (the seed part seen at (n - 1)/n of its size, the residual counted once in the group resampling of the
# resampled seeds, E sum (c_s/n)^2 = (2n - 1)/n^2, and once more in the spread of the seeds). The residual term
# makes the test conservative, the seed term liberal; with the demo's pooled-mAP components they about cancel
# (size 0.05-0.06 at 3 seeds x 200 groups), where the residual dominates the test's size falls below alpha and a
# difference must be larger to be detected. ``minimal_detectable_difference`` and ``detection_power`` describe
# that test by default (test="paired_test": reject when |D| > z_{1-alpha/2} sd_test, D ~ N(delta, var(D))), or a
# test that knows var(D) (test="known_variance": the textbook (z_{1-alpha/2} + z_power) sd(D)).

_TESTS = ("paired_test", "known_variance")


@dataclass
class VarianceComponents:
    """Variance components of the paired difference A - B of one score (per-group scale; see the model above).

    ``variance(seeds, groups)`` is var(D) for another design (default: the pilot's); ``seeds`` is the number of
    seeds per trained point (an int, or a pair (n_A, n_B)); a point run once in the pilot stays fixed (1 run).
    ``test_variance`` is the variance that ``paired_test``'s bootstrap attributes to D in that design.
    """

    difference: float  # A - B in the pilot (seed means)
    group: float  # sigma2_group: variance over groups of the point x group interaction of A - B
    seed_a: float  # sigma2_seed of A: variance of a seed's shift of A's whole score
    seed_b: float
    residual_a: float  # sigma2_residual of A: group x seed interaction, per-group scale
    residual_b: float
    groups: int  # the pilot's design: its number of resampling units (paragraph clusters where recorded)
    seeds_a: int
    seeds_b: int
    questions_per_unit: float = 1.0  # question groups per resampling unit in the pilot (to turn units into max_groups)

    def _design(self, seeds, groups) -> tuple[int, int, float]:
        if seeds is None:
            n_a, n_b = self.seeds_a, self.seeds_b
        else:
            n_a, n_b = (seeds, seeds) if np.isscalar(seeds) else seeds
            n_a, n_b = (n_a if self.seeds_a > 1 else 1), (n_b if self.seeds_b > 1 else 1)
        g = self.groups if groups is None else groups
        if n_a < 1 or n_b < 1 or g < 1:
            raise ValueError(f"a design needs at least one seed and one group, got seeds {seeds!r}, groups {groups!r}")
        return int(n_a), int(n_b), float(g)

    def _parts(self) -> tuple[float, tuple[float, float], tuple[float, float]]:
        clip = lambda v: max(float(v), 0.0)  # noqa: E731
        return (clip(self.group), (clip(self.seed_a), clip(self.seed_b)),
                (clip(self.residual_a), clip(self.residual_b)))

    def variance(self, seeds=None, groups: int | None = None) -> float:
        """var(A - B) of the seed-averaged scores with ``seeds`` per trained point and ``groups`` question groups."""
        n = self._design(seeds, groups)
        group, seed, residual = self._parts()
        return group / n[2] + sum((seed[i] + residual[i] / n[2]) / n[i] for i in (0, 1))

    def test_variance(self, seeds=None, groups: int | None = None) -> float:
        """The expected replicate variance of ``paired_test``'s bootstrap in that design (model above)."""
        n = self._design(seeds, groups)
        group, seed, residual = self._parts()
        return group / n[2] + sum(seed[i] * (n[i] - 1) / n[i] ** 2 + residual[i] * (3 * n[i] - 2) / (n[i] ** 2 * n[2])
                                  for i in (0, 1))

    def standard_error(self, seeds=None, groups: int | None = None) -> float:
        return float(np.sqrt(self.variance(seeds, groups)))

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def group_contributions(tables: list[pd.DataFrame] | pd.DataFrame, metric: str, setting: str,
                        groups: pd.Index | None = None) -> tuple[pd.Index, np.ndarray]:
    """Per-group contributions y [groups, runs] of ``metric`` in ``setting``: each run's score is the mean over
    groups of its column (y_g = G x_g, with x_g the group's term of the score as in ``paired_test``)."""
    tables = [tables] if isinstance(tables, pd.DataFrame) else list(tables)
    groups = shared_units(tables) if groups is None else groups
    parts = [cell_sums(t, metric, setting, groups) for t in tables]
    counts = parts[0].counts
    if any(not p.cells.equals(parts[0].cells) or not np.array_equal(p.counts, counts) for p in parts):
        raise ValueError("the runs must be scored on the same queries (same benchmark, languages and max_groups)")
    cell_total = counts.sum(axis=0)
    valid = cell_total > 0
    y = np.stack([(p.sums[:, valid] / cell_total[valid]).sum(axis=1) / valid.sum() for p in parts], axis=1)
    return groups, y * len(groups)


def _questions_per_unit(tables: list[pd.DataFrame], units: pd.Index) -> float:
    """Question groups per resampling unit: 1 when the unit is the group, ~5.7 for the demo's paragraph clusters."""
    return len(set().union(*(set(t["group"].astype(str)) for t in tables))) / max(1, len(units))


def _seed_anova(y: np.ndarray) -> tuple[float, float]:
    """(sigma2_seed, sigma2_residual) of one point's [groups, seeds] table; (0, 0) for a single run."""
    g, n = y.shape
    if n < 2:
        return 0.0, 0.0
    group_means, seed_means, grand = y.mean(axis=1, keepdims=True), y.mean(axis=0, keepdims=True), y.mean()
    ms_residual = float(((y - group_means - seed_means + grand) ** 2).sum() / ((g - 1) * (n - 1)))
    ms_seed = float(g * ((seed_means - grand) ** 2).sum() / (n - 1))
    return (ms_seed - ms_residual) / g, ms_residual


def variance_components(
    tables_a: list[pd.DataFrame] | pd.DataFrame,
    tables_b: list[pd.DataFrame] | pd.DataFrame,
    metric: str,
    setting: str,
) -> VarianceComponents:
    """Method-of-moments estimates of the variance components of the paired difference A - B (model above).

    ``tables_a``, ``tables_b``: the per-query tables of two points, one per seed, as ``paired_test`` takes them.
    """
    tables_a = [tables_a] if isinstance(tables_a, pd.DataFrame) else list(tables_a)
    tables_b = [tables_b] if isinstance(tables_b, pd.DataFrame) else list(tables_b)
    groups, y = group_contributions(tables_a + tables_b, metric, setting)
    if len(groups) < 2:
        raise ValueError("variance components need at least two question groups")
    y_a, y_b = y[:, : len(tables_a)], y[:, len(tables_a) :]
    seed_a, residual_a = _seed_anova(y_a)
    seed_b, residual_b = _seed_anova(y_b)
    d = y_a.mean(axis=1) - y_b.mean(axis=1)
    group = float(d.var(ddof=1)) - residual_a / len(tables_a) - residual_b / len(tables_b)
    return VarianceComponents(difference=float(d.mean()), group=group, seed_a=seed_a, seed_b=seed_b,
                              residual_a=residual_a, residual_b=residual_b, groups=len(groups),
                              questions_per_unit=_questions_per_unit(tables_a + tables_b, groups),
                              seeds_a=len(tables_a), seeds_b=len(tables_b))


def mean_components(components: list[VarianceComponents]) -> VarianceComponents:
    """The average of several pairs' components (e.g. every pair of a sweep's trained points), as one typical
    pair: each component averaged as estimated (negative estimates included, so the average stays unbiased);
    the design is the pilot's (the first pair's groups, the most seeds of any pair on each side)."""
    if not components:
        raise ValueError("no components to average")
    mean = lambda name: float(np.mean([getattr(c, name) for c in components]))  # noqa: E731
    return VarianceComponents(
        difference=mean("difference"), group=mean("group"), seed_a=mean("seed_a"), seed_b=mean("seed_b"),
        residual_a=mean("residual_a"), residual_b=mean("residual_b"), groups=components[0].groups,
        seeds_a=max(c.seeds_a for c in components), seeds_b=max(c.seeds_b for c in components),
        questions_per_unit=components[0].questions_per_unit)


def _normal():
    from statistics import NormalDist

    return NormalDist()


def _test_sd(components: VarianceComponents, seeds, groups, test: str) -> tuple[float, float]:
    """(sd of D, sd the test attributes to D) in the design."""
    if test not in _TESTS:
        raise ValueError(f"unknown test {test!r}; choose from {_TESTS}")
    sd = components.standard_error(seeds, groups)
    return sd, (sd if test == "known_variance" else float(np.sqrt(components.test_variance(seeds, groups))))


def minimal_detectable_difference(components: VarianceComponents, seeds=None, groups: int | None = None,
                                  alpha: float = 0.05, power: float = 0.8, test: str = "paired_test") -> float:
    """The smallest true |A - B| that the two-sided level-``alpha`` test detects with probability ``power``, with
    ``seeds`` seeds per trained point and ``groups`` question groups (default: the pilot's design).

    Normal approximation: D ~ N(delta, var(D)); ``test="paired_test"`` (default) is the project's bootstrap
    test, which rejects when |D| > z_{1-alpha/2} sd_test with sd_test its own (expected) replicate spread:
    MDD = z_{1-alpha/2} sd_test + z_power sd(D). ``test="known_variance"``: (z_{1-alpha/2} + z_power) sd(D), about
    2.80 sd(D) at 80% power and alpha 0.05. The MDD is as good as the pilot's components: with 3 seeds a point's
    seed variance rests on 2 degrees of freedom.
    """
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha}, {power}")
    sd, sd_test = _test_sd(components, seeds, groups, test)
    z = _normal().inv_cdf
    return z(1 - alpha / 2) * sd_test + z(power) * sd


def detection_power(components: VarianceComponents, difference: float, seeds=None, groups: int | None = None,
                    alpha: float = 0.05, test: str = "paired_test") -> float:
    """Probability that the two-sided level-``alpha`` test (``minimal_detectable_difference``'s normal
    approximation) detects a true difference ``difference`` with ``seeds`` seeds per trained point and ``groups``
    groups; at ``difference`` = 0 it is the test's size."""
    sd, sd_test = _test_sd(components, seeds, groups, test)
    if sd == 0:
        return 1.0 if difference != 0 else 0.0
    normal = _normal()
    bound = normal.inv_cdf(1 - alpha / 2) * sd_test
    return normal.cdf((abs(difference) - bound) / sd) + normal.cdf((-abs(difference) - bound) / sd)


def required_design(components: VarianceComponents, target: float, seeds=range(2, 21),
                    max_groups: int | None = None, alpha: float = 0.05, power: float = 0.8,
                    test: str = "paired_test") -> pd.DataFrame:
    """For each number of seeds per trained point, the fewest resampling units (``groups``: paragraph clusters
    where the tables record them, else question groups) that detect ``target`` with probability ``power`` at
    two-sided level ``alpha`` (``minimal_detectable_difference`` <= ``target``); ``question_groups`` turns them
    into question groups (``max_groups``) at the pilot's questions per unit.

    The MDD falls with G towards its seed-only limit; where that limit is above ``target`` no number of groups
    suffices (``groups`` NaN), and a design needing more than ``max_groups`` (the benchmark's size) is marked
    unreachable. Returns one row per seed count: seeds, groups (NaN: none suffices), reachable, mdd and power
    (at that design; at ``max_groups``, else the pilot's groups, where unreachable), limit (the MDD with every
    group term gone).
    """
    mdd = lambda n, g: minimal_detectable_difference(components, n, g, alpha, power, test)  # noqa: E731
    ceiling = 10**9
    rows = []
    for n in seeds:
        limit, groups = mdd(n, ceiling), None
        if limit <= abs(target):
            low, high = 1, 2
            while mdd(n, high) > abs(target):  # doubling, then bisection: the MDD falls with G
                low, high = high, high * 2
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if mdd(n, middle) > abs(target) else (low, middle)
            groups = max(high, 2)
        reachable = groups is not None and (max_groups is None or groups <= max_groups)
        at = groups if reachable else (max_groups or components.groups)
        rows.append({"seeds": n, "groups": float(groups) if groups is not None else float("nan"),
                     "question_groups": (float(np.ceil(groups * components.questions_per_unit))
                                         if groups is not None else float("nan")),
                     "reachable": reachable, "mdd": mdd(n, at),
                     "power": detection_power(components, target, n, at, alpha, test), "limit": limit})
    return pd.DataFrame(rows)


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


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion (well-behaved near 0 and 1, unlike the normal approximation)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))
