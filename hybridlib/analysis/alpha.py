"""What a sweep can resolve and the alpha curve: minimal detectable differences per point pair (the power
analysis of ``evaluation.stats``), the points on the mono-cross edge, and the best alpha with its confidence set."""

from __future__ import annotations

import pandas as pd

from ..evaluation.stats import holm, paired_test
from ..evaluation.tasks import get_task
from .results import metric_key, per_query, runs_by_point

# --- what a sweep can resolve; the alpha curve (stats power analysis) ---------------------------------------

# scores where lower is better (less language bias), and their centred variants; every other score: higher
LOWER_IS_BETTER = ("rank_distance", "top10_same_language")


def lower_is_better(key: str) -> bool:
    """Whether a lower value of the score ``key`` (a metric or a ``metric_key``) is better."""
    return key.startswith(LOWER_IS_BETTER)


def point_tables(runs: list[dict], benchmark: str) -> dict[str, list[pd.DataFrame]]:
    """The per-query tables of every sweep point (one per seed), in sweep order."""
    return {point: [per_query(run, benchmark) for run in members]
            for point, members in runs_by_point(runs, benchmark).items()}


def minimal_detectable_differences(runs: list[dict], benchmark: str, metric: str = "map", setting: str = "multi",
                                   alpha: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """Every pair of sweep points (A before B, as ``paired_tests``): the minimal detectable difference of the
    sweep's design (``mdd``: the true |A - B| a two-sided level-``alpha`` test detects with probability
    ``power``), its standard error and the variance components it comes from (``stats.variance_components``:
    group, seed_a/b, residual_a/b on the per-group scale), estimated from the pair's own per-query tables.

    A pair with p >= alpha and |A - B| below its ``mdd`` is unresolved, not shown equal: "smaller than mdd, if
    any" (a true difference of mdd would have been found 4 times in 5). With 3 seeds a point's seed component
    rests on 2 degrees of freedom, so a single pair's mdd is rough; ``resolution`` averages pairs.
    """
    from ..evaluation.stats import minimal_detectable_difference, variance_components

    tables = point_tables(runs, benchmark)
    names = list(tables)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            try:
                c = variance_components(tables[a], tables[b], metric, setting)
            except ValueError:  # fewer than two resampling units (a tiny slice on one paragraph): no estimate
                rows.append({"a": a, "b": b, "mdd": float("nan")})
                continue
            rows.append({"a": a, "b": b, "difference": c.difference, "se": c.standard_error(),
                         "mdd": minimal_detectable_difference(c, alpha=alpha, power=power),
                         **{k: v for k, v in c.as_dict().items() if k != "difference"}})
    columns = ["a", "b", "difference", "se", "mdd", "group", "seed_a", "seed_b", "residual_a", "residual_b",
               "groups", "seeds_a", "seeds_b"]
    return pd.DataFrame(rows, columns=columns)


def with_mdd(tests: pd.DataFrame, mdds: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """``paired_tests`` with the pair's ``mdd`` beside it and a reading: "A > B" / "A < B" where p < alpha, else
    "|A - B| < mdd, if any" (the test would have found a true difference of mdd with the chosen power)."""
    out = tests.merge(mdds[["a", "b", "mdd"]], on=["a", "b"], how="left")
    digits = 1 if out["mdd"].abs().max() >= 1 else 3

    def reading(row) -> str:
        if row.p_value < alpha:
            return f"{row.a} {'>' if row.difference > 0 else '<'} {row.b}"
        return f"|{row.a} - {row.b}| < {row.mdd:.{digits}f}, if any"

    out["reading"] = [reading(row) for row in out.itertuples()]
    return out


def edge_point_names(runs: list[dict], benchmark: str) -> list[str]:
    """The fine-tuned points on the mono-cross edge (ratio_multi == 0), sorted by alpha = ratio_mono: those that
    differ in their ratios only (a point that also changes e.g. ``negatives`` is off the curve)."""
    from collections import Counter

    from ..parameters import BOOKKEEPING_KEYS, DEFAULTS

    def recipe(params: dict) -> tuple:  # everything but the ratios, the seed and the bookkeeping
        full = {**DEFAULTS, **params}  # a record from before a parameter existed has its default (differing_params)
        return tuple(sorted((k, repr(v)) for k, v in full.items()
                            if not k.startswith("ratio_") and k not in ("seed", *BOOKKEEPING_KEYS)))

    points = runs_by_point(runs, benchmark)
    edge = {point: members[0]["params"] for point, members in points.items()
            if members[0]["params"]["steps"] > 0 and abs(members[0]["params"]["ratio_multi"]) < 1e-9}
    if not edge:
        return []
    common = Counter(recipe(p) for p in edge.values()).most_common(1)[0][0]
    on_curve = [(p["ratio_mono"], point) for point, p in edge.items() if recipe(p) == common]
    return [point for _, point in sorted(on_curve, key=lambda item: item[0])]


def resolution(runs: list[dict], benchmark: str, metric: str = "map", setting: str = "multi", points=None,
               alpha: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """What the sweep's design resolves for a typical pair of ``points`` (default: the fine-tuned points on the
    mono-cross edge): the variance components averaged over their pairs (``stats.mean_components``; per point
    for seed and residual) and the minimal detectable difference of that average pair at the sweep's seeds and
    groups. ``mdd_holm`` is the same at the first Holm step over the comparisons with the best of them
    (alpha / (points - 1)), what the confidence set of ``best_alpha`` needs. One row; empty with < 2 points.

    Averaging over pairs steadies the seed part (each point's seed variance has n - 1 degrees of freedom), but
    the group part grows with how far apart two points are: the average speaks for a typical pair of them.
    """
    from itertools import combinations

    from ..evaluation.stats import mean_components, minimal_detectable_difference, variance_components

    tables = point_tables(runs, benchmark)
    members = edge_point_names(runs, benchmark) if points is None else list(points)
    pairs = list(combinations(members, 2))
    columns = ["points", "pairs", "seeds", "groups", "group", "seed", "residual", "se", "mdd", "mdd_holm"]
    if not pairs:
        return pd.DataFrame(columns=columns)
    try:
        c = mean_components([variance_components(tables[a], tables[b], metric, setting) for a, b in pairs])
    except ValueError:  # fewer than two resampling units: nothing to estimate from
        return pd.DataFrame(columns=columns)
    return pd.DataFrame([{"points": ", ".join(members), "pairs": len(pairs), "seeds": c.seeds_a, "groups": c.groups,
                          "group": c.group, "seed": (c.seed_a + c.seed_b) / 2,
                          "residual": (c.residual_a + c.residual_b) / 2, "se": c.standard_error(),
                          "mdd": minimal_detectable_difference(c, alpha=alpha, power=power),
                          "mdd_holm": minimal_detectable_difference(c, alpha=alpha / max(len(members) - 1, 1),
                                                                    power=power)}], columns=columns)


def best_alpha(runs: list[dict], benchmark: str, metric: str = "map", setting: str = "multi", level: float = 0.05,
               permutations: int = 10000, replicates: int = 4000) -> pd.DataFrame:
    """The best alpha (share of mono batches) on the mono-cross edge, with a confidence set.

    One row per fine-tuned point with ratio_multi == 0, by alpha: the score (mean over seeds), and its paired test
    against the best point (``stats.paired_test``: A = the point, B = the best; ``difference`` = point - best,
    with its 95% interval; p from the bootstrap over groups and seeds where seeded). ``p_holm`` adjusts the
    p-values over the comparisons with the best (Holm); the confidence set (``in_set``) is the best and every
    alpha not significantly worse than it (p_holm >= ``level``). Best = highest score, lowest where
    ``lower_is_better``. The set is the practical "indistinguishable from the best" reading: the best
    is chosen from the same data, and two-sided tests keep the set on the generous side.
    """
    from ..evaluation.stats import group_contributions

    tables = point_tables(runs, benchmark)
    edge = edge_point_names(runs, benchmark)
    columns = ["point", "alpha", "seeds", "score", "difference", "low", "high", "p_value", "p_holm", "best",
               "in_set"]
    if not edge:
        return pd.DataFrame(columns=columns)
    score = {point: float(group_contributions(tables[point], metric, setting)[1].mean()) for point in edge}
    best = (min if lower_is_better(metric) else max)(edge, key=lambda point: score[point])
    rows = []
    for point in edge:
        row = {"point": point, "alpha": runs_by_point(runs, benchmark)[point][0]["params"]["ratio_mono"],
               "seeds": len(tables[point]), "score": score[point], "best": point == best}
        if point == best:
            row.update(difference=0.0, low=0.0, high=0.0, p_value=float("nan"))
        else:
            test = paired_test(tables[point], tables[best], metric, setting, permutations=permutations,
                               replicates=replicates)
            row.update({k: test[k] for k in ("difference", "low", "high", "p_value")})
        rows.append(row)
    out = pd.DataFrame(rows, columns=columns[:-2] + ["best"])
    others = ~out["best"]
    out["p_holm"] = float("nan")
    if others.any():
        out.loc[others, "p_holm"] = holm(out.loc[others, "p_value"])
    out["in_set"] = out["best"] | (out["p_holm"] >= level)
    return out[columns]


def alpha_confidence_sets(runs: list[dict], benchmark: str, metrics=None, level: float = 0.05,
                          permutations: int = 10000, replicates: int = 4000) -> dict[str, pd.DataFrame]:
    """``best_alpha`` for every (metric, setting) (default: the task's ``interval_metrics``), keyed by ``metric_key``."""
    metrics = get_task(benchmark).interval_metrics if metrics is None else metrics
    return {metric_key(metric, setting): best_alpha(runs, benchmark, metric, setting, level, permutations, replicates)
            for metric, setting in metrics}


def alpha_summary(sets: dict[str, pd.DataFrame], digits: int = 3) -> pd.DataFrame:
    """One row per score of ``alpha_confidence_sets``: the best alpha, its score, the confidence set and the
    alphas shown worse than the best (Holm-adjusted)."""
    fmt = lambda alphas: ", ".join(f"{a:g}" for a in alphas) or "none"  # noqa: E731
    rows = []
    for key, table in sets.items():
        if table.empty:
            continue
        best = table[table["best"]].iloc[0]
        d = 1 if key.startswith("rank_distance") else digits
        rows.append({"score": key, "best alpha": best["alpha"], "best score": round(best["score"], d),
                     "better": "lower" if lower_is_better(key) else "higher",
                     "confidence set (not worse than the best, Holm)": fmt(table.loc[table["in_set"], "alpha"]),
                     "worse than the best": fmt(table.loc[~table["in_set"], "alpha"])})
    return pd.DataFrame(rows).set_index("score") if rows else pd.DataFrame()


def alpha_statement(table: pd.DataFrame, key: str, mdd: float | None = None) -> str:
    """One sentence for a ``best_alpha`` table: the best alpha and its score, the confidence set, the alphas
    shown worse (with their difference and paired interval) and, given ``mdd`` (``resolution``'s ``mdd_holm``),
    how large a gap to the best the set can hide."""
    d = 1 if key.startswith("rank_distance") else 3
    best = table[table["best"]].iloc[0]
    kept = ", ".join(f"{a:g}" for a in table.loc[table["in_set"], "alpha"])
    text = (f"{key}: best alpha {best['alpha']:g} ({best['score']:.{d}f}, {'lower' if lower_is_better(key) else 'higher'}"
            f" is better); confidence set {{{kept}}} (not significantly worse than the best, Holm over "
            f"{len(table) - 1} comparisons)")
    worse = table[~table["in_set"]]
    if len(worse):
        text += "; worse: " + ", ".join(f"alpha {r.alpha:g} {r.difference:+.{d}f} [{r.low:+.{d}f}, {r.high:+.{d}f}]"
                                        for r in worse.itertuples())
    if mdd is not None and (table["in_set"] & ~table["best"]).any():
        text += (f"; the other members are not shown equal to the best: this design finds a gap of {mdd:.{d}f} "
                 "to the best 4 times in 5, a smaller one less often")
    return text + "."
