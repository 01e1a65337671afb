"""Power analysis (hybridlib.evaluation.stats: variance components, minimal detectable difference, design) by simulation,
and the sweep-level tables built on it (hybridlib.analysis) on the committed demo."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridlib.evaluation import stats
from hybridlib.evaluation.stats import VarianceComponents

DEMO = Path(__file__).resolve().parents[1] / "outputs" / "demo"
LANGS = ("en", "de")


def skeleton(groups: int) -> pd.DataFrame:
    """The query rows of a pooled-setting per-query table: every group asked in both languages."""
    return pd.DataFrame({"setting": "multi", "group": np.repeat([f"g{g:04d}" for g in range(groups)], len(LANGS)),
                         "lang": np.tile(LANGS, groups), "corpus_lang": "all"})


def simulate_point(rng, frame, effect, seeds, mean, seed_sd, residual_sd, query_sd) -> list[pd.DataFrame]:
    """One point's per-query tables, one per seed: AP = mean + effect[g] + t_s + w_gs + e_gls (all seeds at once).

    The per-group contribution (the mean over the two language cells) then has seed variance seed_sd^2 and
    residual variance residual_sd^2 + query_sd^2 / 2.
    """
    g = len(effect)
    values = (mean + effect[:, None, None] + rng.normal(0, seed_sd, seeds)[None, None, :]
              + rng.normal(0, residual_sd, (g, 1, seeds)) + rng.normal(0, query_sd, (g, len(LANGS), seeds)))
    return [frame.assign(ap=values[:, :, s].ravel()) for s in range(seeds)]


# true components (per-group scale), near the demo's pooled mAP: group 6e-4, seed 1e-5, residual 8e-4
TRUTH = {"group": 6e-4, "seed": 1e-5, "residual_sd": 6e-4 ** 0.5, "query_sd": 4e-4 ** 0.5}
TRUE_RESIDUAL = TRUTH["residual_sd"] ** 2 + TRUTH["query_sd"] ** 2 / len(LANGS)


def simulate_pair(rng, groups, seeds, difference=0.0, frame=None):
    """Points A and B on the same groups: shared difficulty u_g, A - B interaction v_g, planted ``difference``."""
    frame = skeleton(groups) if frame is None else frame
    u = rng.normal(0, 0.15, groups)
    v = rng.normal(0, TRUTH["group"] ** 0.5, groups)
    common = (seeds, TRUTH["seed"] ** 0.5, TRUTH["residual_sd"], TRUTH["query_sd"])
    return (simulate_point(rng, frame, u + v, common[0], 0.5 + difference, *common[1:]),
            simulate_point(rng, frame, u, common[0], 0.5, *common[1:]))


def truth(groups, seeds, difference=0.0) -> VarianceComponents:
    return VarianceComponents(difference, TRUTH["group"], TRUTH["seed"], TRUTH["seed"], TRUE_RESIDUAL, TRUE_RESIDUAL,
                              groups, seeds, seeds)


def test_variance_mdd_and_power_follow_the_model():
    c = VarianceComponents(0.0, group=4e-4, seed_a=1e-5, seed_b=2e-5, residual_a=8e-4, residual_b=6e-4, groups=200,
                           seeds_a=4, seeds_b=4)
    assert c.variance() == pytest.approx(4e-4 / 200 + (1e-5 + 8e-4 / 200) / 4 + (2e-5 + 6e-4 / 200) / 4)
    assert c.variance(seeds=(2, 8), groups=1000) == pytest.approx(4e-4 / 1000 + (1e-5 + 8e-4 / 1000) / 2
                                                                   + (2e-5 + 6e-4 / 1000) / 8)
    # the bootstrap's view: the seed part at (n - 1)/n, the residual (3n - 2)/n times
    assert c.test_variance() == pytest.approx(4e-4 / 200 + (1e-5 + 2e-5) * 3 / 16 + (8e-4 + 6e-4) * 10 / (16 * 200))
    known = stats.minimal_detectable_difference(c, test="known_variance")
    assert known == pytest.approx(2.8016 * c.standard_error(), rel=1e-4)
    for test in ("paired_test", "known_variance"):
        mdd = stats.minimal_detectable_difference(c, test=test)
        assert stats.detection_power(c, mdd, test=test) == pytest.approx(0.8, abs=1e-3)
        assert stats.detection_power(c, -mdd, test=test) == pytest.approx(0.8, abs=1e-3)
        # more seeds or groups never hurt, and a bigger difference is easier to detect
        assert stats.minimal_detectable_difference(c, 8, 400, test=test) < mdd
        assert stats.detection_power(c, 2 * mdd, test=test) > 0.99
    assert stats.detection_power(c, 0.0, test="known_variance") == pytest.approx(0.05)
    with pytest.raises(ValueError, match="unknown test"):
        stats.minimal_detectable_difference(c, test="t")


def test_required_design_is_the_smallest_sufficient_and_knows_its_limits():
    c = VarianceComponents(0.0, 6e-4, 4e-5, 4e-5, 8e-4, 8e-4, groups=200, seeds_a=3, seeds_b=3)
    table = stats.required_design(c, 0.01, seeds=range(2, 11), max_groups=1190)
    assert list(table["seeds"]) == list(range(2, 11))
    for row in table[table["groups"].notna()].itertuples():
        assert stats.minimal_detectable_difference(c, row.seeds, int(row.groups)) <= 0.01
        assert stats.minimal_detectable_difference(c, row.seeds, int(row.groups) - 1) > 0.01
        assert row.power >= 0.8 - 1e-9 or not row.reachable
    assert table["groups"].dropna().is_monotonic_decreasing  # more seeds, fewer groups
    # with up to 5 seeds the seed terms alone exceed the bound: no number of groups is enough
    few = table[table["seeds"] <= 5]
    assert few["groups"].isna().all() and not few["reachable"].any() and (few["limit"] > 0.01).all()
    assert (few["power"] < 0.8).all() and table.loc[table["seeds"] > 6, "reachable"].all()
    # 6 seeds would need more groups than XQuAD-R's 1190: unreachable, with its MDD at all 1190 groups
    six = table.set_index("seeds").loc[6]
    assert six["groups"] > 1190 and not six["reachable"] and six["mdd"] > 0.01
    assert six["mdd"] == pytest.approx(stats.minimal_detectable_difference(c, 6, 1190))


def test_a_point_run_once_is_fixed_and_the_difference_is_paired_tests():
    rng = np.random.default_rng(3)
    a, b = simulate_pair(rng, 80, 3, difference=0.02)
    c = stats.variance_components(a[:1], b, "map", "multi")  # A run once: an untouched model
    assert (c.seed_a, c.residual_a, c.seeds_a) == (0.0, 0.0, 1)
    assert c.variance(seeds=50) == pytest.approx(c.group / 80 + (max(c.seed_b, 0) + c.residual_b / 80) / 50)
    for tables_a in (a, a[:1]):
        test = stats.paired_test(tables_a, b, "map", "multi", permutations=50, replicates=50)
        assert stats.variance_components(tables_a, b, "map", "multi").difference == pytest.approx(test["difference"])


def test_known_components_come_back():
    """Unbiased method-of-moments estimates: the average over 20 simulated pilots is within a few of its
    standard errors of the truth (seed: 5 degrees of freedom per point and pilot, hence the looser bound)."""
    rng = np.random.default_rng(0)
    frame = skeleton(150)
    estimates = [stats.variance_components(*simulate_pair(rng, 150, 6, frame=frame), "map", "multi") for _ in range(20)]
    mean = lambda name: np.mean([getattr(c, name) for c in estimates])  # noqa: E731
    assert mean("group") == pytest.approx(TRUTH["group"], rel=0.15)
    assert (mean("seed_a") + mean("seed_b")) / 2 == pytest.approx(TRUTH["seed"], rel=0.3)
    assert (mean("residual_a") + mean("residual_b")) / 2 == pytest.approx(TRUE_RESIDUAL, rel=0.05)
    assert abs(mean("difference")) < 0.005
    pooled = stats.mean_components(estimates)
    assert pooled.group == pytest.approx(mean("group")) and pooled.seeds_a == 6 and pooled.groups == 150


def test_a_design_called_sufficient_detects_the_planted_difference_about_80_percent_of_the_time():
    """Pilot -> components -> the design for 0.01 with 3 seeds -> 80 simulated sweeps at that design with 0.01
    planted, each judged by the project's own test (paired bootstrap over groups and seeds). The pilot has 40
    seeds: the groups a design needs depend on the seed variance, which a small pilot estimates roughly."""
    rng = np.random.default_rng(1)
    pilot = stats.variance_components(*simulate_pair(rng, 300, 40), "map", "multi")
    design = stats.required_design(pilot, 0.01, seeds=[3]).iloc[0]
    assert design["reachable"]
    groups = int(design["groups"])
    assert 100 <= groups <= 600  # the truth asks for ~200
    frame = skeleton(groups)
    detected, widths = [], []
    for sweep in range(80):
        a, b = simulate_pair(rng, groups, 3, difference=0.01, frame=frame)
        test = stats.paired_test(a, b, "map", "multi", permutations=20, replicates=400, seed=sweep)
        detected.append(test["p_value"] < 0.05)
        widths.append((test["high"] - test["low"]) / (2 * 1.96))
    assert 0.65 <= np.mean(detected) <= 0.95
    # the bootstrap's spread is what the model says it is (this is what makes the test conservative here)
    assert np.mean(widths) == pytest.approx(truth(groups, 3).test_variance() ** 0.5, rel=0.1)


# --- the sweep-level tables on the committed demo (5 trained points x 3 seeds + the untouched model) ---------


@pytest.fixture(scope="module")
def demo_runs():
    from hybridlib.analysis.results import load_runs

    return load_runs(DEMO)


def test_mdd_table_pairs_like_the_tests_and_reads_them(demo_runs):
    from hybridlib import analysis

    runs = [r for r in demo_runs if r["point"] in ("baseline", "cross", "hybrid-paper")]
    mdds = analysis.minimal_detectable_differences(runs, "xquad-r", "map", "multi")
    tests = analysis.paired_tests(runs, "xquad-r", "map", "multi", permutations=200)
    assert list(zip(mdds["a"], mdds["b"])) == list(zip(tests["a"], tests["b"]))
    assert np.allclose(mdds["difference"], tests["difference"])
    pair = mdds.set_index(["a", "b"]).loc[("cross", "hybrid-paper")]
    assert 0.005 < pair["mdd"] < 0.03 and pair["seeds_a"] == 3 and pair["groups"] == 35  # paragraphs
    assert mdds.set_index(["a", "b"]).loc[("baseline", "cross"), "seed_a"] == 0  # the untouched model is fixed
    read = analysis.with_mdd(tests, mdds)
    for row in read.itertuples():
        assert row.reading == (f"{row.a} {'>' if row.difference > 0 else '<'} {row.b}" if row.p_value < 0.05
                               else f"|{row.a} - {row.b}| < {row.mdd:.3f}, if any")


def test_best_alpha_and_its_confidence_set_on_the_demo_edge(demo_runs):
    from hybridlib import analysis
    from hybridlib.analysis import plots

    demo_runs = [r for r in demo_runs if r["point"] not in ("multi", "thirds")]  # the edge and the untouched model
    assert analysis.edge_point_names(demo_runs, "xquad-r") == ["cross", "hybrid-paper", "mono"]  # by alpha
    table = analysis.best_alpha(demo_runs, "xquad-r", "map", "multi", permutations=200, replicates=2000)
    assert list(table["alpha"]) == [0.0, 0.5, 1.0]
    best = table[table["best"]]
    assert list(best["point"]) == ["cross"] and best["in_set"].all()  # pooled mAP 0.583 against 0.574, 0.558
    others = table[~table["best"]]
    assert (others["difference"] < 0).all() and np.allclose(others["p_holm"], stats.holm(others["p_value"]))
    assert list(table["in_set"]) == list(table["best"] | (table["p_holm"] >= 0.05))
    assert not table.set_index("point").loc["mono", "in_set"]  # -0.025 [-0.037, -0.014]
    rank = analysis.best_alpha(demo_runs, "xquad-r", "rank_distance", "multi", permutations=200, replicates=500)
    assert rank.loc[rank["best"], "score"].iloc[0] == rank["score"].min()  # lower is better

    resolution = analysis.resolution(demo_runs, "xquad-r")
    assert resolution["pairs"].iloc[0] == 3 and resolution["mdd_holm"].iloc[0] > resolution["mdd"].iloc[0] > 0
    sets = {"map_multi": table, "rank_distance": rank}
    summary = analysis.alpha_summary(sets)
    assert summary.loc["map_multi", "best alpha"] == 0.0 and summary.loc["rank_distance", "better"] == "lower"
    points = analysis.point_scores(demo_runs, "xquad-r", metrics=[("map", "multi"), ("rank_distance", "multi")],
                                   replicates=200)
    fig = plots.metric_vs_alpha(points, sets)
    assert fig.axes[0].get_title().startswith("map_multi: best alpha 0") and len(fig.axes) == 4


def test_the_committed_alpha_curve_reads_as_the_readme_says():
    """outputs/demo-alpha (the design of params/demo-alpha.yaml, run): five alphas x three seeds on 600 groups;
    the README's answer: cross-only best, alpha 0.5 in the confidence set, mono-only outside it, and a design that
    resolves less than planned (MDD 0.0156 vs 0.0114, the seed variance larger than the pilot's)."""
    from hybridlib import analysis
    from hybridlib.analysis.results import load_runs

    sweep = DEMO.parent / "demo-alpha"
    if not (sweep / "sweep.json").exists():
        pytest.skip("outputs/demo-alpha is not in this checkout: run make demo-alpha")
    runs = load_runs(sweep)
    table = analysis.best_alpha(runs, "xquad-r", "map", "multi", permutations=500, replicates=1000)
    assert list(table["alpha"]) == [0.0, 0.25, 0.5, 0.75, 1.0] and (table["seeds"] == 3).all()
    by_alpha = table.set_index("alpha")
    assert by_alpha.loc[0.0, "best"] and by_alpha.loc[0.5, "in_set"] and not by_alpha.loc[1.0, "in_set"]
    assert -0.03 < by_alpha.loc[1.0, "difference"] < -0.012  # -0.021 [-0.030, -0.011]
    resolution = analysis.resolution(runs, "xquad-r").iloc[0]
    assert resolution["groups"] == 114 and resolution["pairs"] == 10  # paragraph clusters of the 600 groups
    assert 0.013 < resolution["mdd"] < 0.018 and resolution["mdd_holm"] > resolution["mdd"]
