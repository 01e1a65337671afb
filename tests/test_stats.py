"""Bootstrap intervals and paired tests (hybridlib.evaluation.stats) on real per-query tables and on simulations."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridlib.evaluation.metrics import summarize_scores
from hybridlib.evaluation.stats import bootstrap_ci, cell_sums, paired_test, resampling_unit

BASELINE = Path(__file__).resolve().parents[1] / "outputs" / "demo" / "baseline"


@pytest.fixture(scope="module")
def real():
    """The committed demo baseline: e5-small on 200 XQuAD-R groups x 11 languages (real evaluation)."""
    from hybridlib.analysis.results import per_query

    table = per_query({"path": BASELINE}, "xquad-r")  # as the notebooks read a run's table
    report = json.loads((BASELINE / "metrics.json").read_text())["benchmarks"]["xquad-r"]
    return table, report


def synthetic(rng, groups=120, langs=("en", "de", "fr"), shift=0.0, noise=0.25, base=None):
    """A per-query table with mono/cross/multi rows; per-group difficulty shared by every row of a group."""
    base = rng.uniform(0.2, 0.8, size=groups) if base is None else base
    rows = []
    for g in range(groups):
        for x in langs:
            for setting, corpora in (("mono", [x]), ("cross", [y for y in langs if y != x]), ("multi", ["all"])):
                for y in corpora:
                    ap = float(np.clip(base[g] + shift + noise * rng.standard_normal(), 0, 1))
                    rows.append({"setting": setting, "query_id": f"{x}:{g}", "group": f"g{g}", "lang": x,
                                 "corpus_lang": y, "ap": ap, "ap@20": ap, "recall@1": ap, "recall@10": ap,
                                 "rank_distance": 10 * ap if setting == "multi" else np.nan,
                                 "top10_same_language": ap if setting == "multi" else np.nan})
    return pd.DataFrame(rows)


def test_plain_scores_equal_the_report(real):
    table, report = real
    ones = lambda part: part.score(np.ones((1, len(part.groups))))[0]  # noqa: E731
    for metric in ("map", "map@20", "recall@1", "recall@10"):
        for setting in ("mono", "cross", "multi"):
            assert ones(cell_sums(table, metric, setting)) == pytest.approx(report[metric][setting], abs=1e-6)  # the CSV keeps ~7 significant digits
    assert ones(cell_sums(table, "rank_distance", "multi")) == pytest.approx(report["rank_distance"], abs=1e-6)
    assert ones(cell_sums(table, "top10_same_language", "multi")) == pytest.approx(
        report["top10_same_language"], abs=1e-6)  # the CSV keeps ~7 significant digits


def test_interval_brackets_the_score_and_matches_a_slow_cluster_bootstrap(real):
    table, report = real
    ci = bootstrap_ci(table, "map", "multi", replicates=400, seed=1)
    assert ci["mean"] == pytest.approx(report["map"]["multi"], abs=1e-6)
    assert ci["low"] < ci["mean"] < ci["high"]
    assert 0.01 < ci["high"] - ci["low"] < 0.15  # 35 paragraphs: a few points of mAP, not zero, not huge
    # the same bootstrap done the slow way: resample whole units (paragraph clusters where recorded), rebuild the
    # table, summarize_scores
    rng = np.random.default_rng(2)
    unit = resampling_unit([table])
    groups = table[unit].unique()
    by_group = dict(tuple(table.groupby(unit)))
    slow = [summarize_scores(pd.concat([by_group[g] for g in rng.choice(groups, size=len(groups))]))["map"]["multi"]
            for _ in range(150)]
    lo, hi = np.quantile(slow, [0.025, 0.975])
    assert ci["low"] == pytest.approx(lo, abs=0.012) and ci["high"] == pytest.approx(hi, abs=0.012)


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    truth = 0.5  # base ~ U(0.2, 0.8) has mean 0.5; clipping at [0, 1] is symmetric around it
    covered = 0
    for trial in range(120):
        table = synthetic(rng, groups=60)
        ci = bootstrap_ci(table, "map", "multi", replicates=300, seed=trial)
        covered += ci["low"] <= truth <= ci["high"]
    assert 0.85 <= covered / 120 <= 1.0


def test_seeds_widen_the_interval_and_report_their_spread():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.8, size=80)
    seeds = [synthetic(rng, groups=80, base=base, shift=s, noise=0.05) for s in (-0.08, 0.0, 0.08)]
    pooled = bootstrap_ci(seeds, "map", "mono", replicates=1000)
    single = bootstrap_ci(seeds[1], "map", "mono", replicates=1000)
    assert pooled["seeds"] == 3 and pooled["seed_std"] == pytest.approx(0.08, abs=0.02)
    assert pooled["high"] - pooled["low"] > single["high"] - single["low"]


def test_paired_test_finds_a_real_shift_and_not_a_null_one():
    rng = np.random.default_rng(4)
    base = rng.uniform(0.2, 0.8, size=100)
    a = synthetic(rng, groups=100, base=base, noise=0.1)
    better = a.assign(ap=np.clip(a["ap"] + 0.03, 0, 1))
    shifted = paired_test(better, a, "map", "cross", permutations=4000)
    assert shifted["difference"] == pytest.approx(0.03, abs=0.005)
    assert shifted["p_value"] < 0.01 and shifted["low"] > 0
    same = paired_test(a, a, "map", "cross", permutations=2000)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    # no true difference: p-values spread out, few below 0.05
    p_values = [paired_test(synthetic(rng, groups=100, base=base, noise=0.1),
                            synthetic(rng, groups=100, base=base, noise=0.1), "map", "multi",
                            permutations=500, replicates=200, seed=i)["p_value"] for i in range(40)]
    assert np.mean(np.array(p_values) < 0.05) <= 0.15 and np.median(p_values) > 0.2


def test_paired_difference_equals_difference_of_reports(real):
    table, report = real
    rng = np.random.default_rng(5)
    other = table.assign(ap=np.clip(table["ap"] + rng.normal(0, 0.1, len(table)), 0, 1))
    test = paired_test(other, table, "map", "cross", permutations=200, replicates=200)
    expected = summarize_scores(other)["map"]["cross"] - report["map"]["cross"]
    assert test["difference"] == pytest.approx(expected, abs=1e-6)  # summation order


def test_errors_name_the_problem(real):
    table, _ = real
    with pytest.raises(ValueError, match="unknown metric"):
        cell_sums(table, "ndcg", "multi")
    with pytest.raises(ValueError, match="pooled"):
        cell_sums(table, "rank_distance", "mono")
    with pytest.raises(ValueError, match="same queries"):
        paired_test(table, table[table["lang"] != "de"], "map", "multi")


def test_with_seeds_the_test_counts_training_randomness():
    """A 0.03 gap between two recipes whose seeds scatter by +-0.08 is no finding, though each pair of
    trained models differs clearly on the same questions; with tight seeds the same gap is one."""
    rng = np.random.default_rng(6)
    base = rng.uniform(0.2, 0.8, size=100)

    def point(mean_shift, spread):
        return [synthetic(rng, groups=100, base=base, shift=mean_shift + s, noise=0.05) for s in spread]

    loose = paired_test(point(0.03, (-0.08, 0.0, 0.08)), point(0.0, (0.08, -0.08, 0.0)), "map", "multi",
                        permutations=2000, replicates=2000)
    assert loose["method"] == "bootstrap over groups and seeds"
    assert loose["p_randomisation"] < 0.01 and loose["p_value"] > 0.2 and loose["low"] < 0 < loose["high"]
    tight = paired_test(point(0.03, (-0.005, 0.0, 0.005)), point(0.0, (0.005, -0.005, 0.0)), "map", "multi",
                        permutations=2000, replicates=2000)
    assert tight["p_value"] < 0.01 and tight["low"] > 0


def test_questions_on_one_paragraph_are_resampled_together(data_dir):
    """The resampling unit is the paragraph of the gold (real XQuAD-R): counted here from the raw file."""
    from hybridlib.data.benchmarks import load_benchmark
    from hybridlib.evaluation.metrics import evaluate_embeddings
    from hybridlib.evaluation.stats import resampling_unit, shared_units

    bench = load_benchmark("xquad-r", languages=["de", "en"], max_groups=60)
    raw = json.loads((data_dir / "xquad-r" / "en.json").read_text())["data"]
    paragraphs, seen = set(), 0
    for a, article in enumerate(raw):
        for p, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph["qas"]:
                if seen < 60 and qa["id"] in set(bench.queries["group"]):
                    paragraphs.add((a, p))
                    seen += 1
    rng = np.random.default_rng(0)
    q = rng.standard_normal((len(bench.queries), 8)).astype(np.float32)
    c = rng.standard_normal((len(bench.candidates), 8)).astype(np.float32)
    _, table = evaluate_embeddings(bench, q / np.linalg.norm(q, axis=1, keepdims=True),
                                   c / np.linalg.norm(c, axis=1, keepdims=True))
    assert resampling_unit([table]) == "cluster"
    units = shared_units([table])
    assert len(units) == len(paragraphs) < 60  # several questions per paragraph
    assert table.groupby("group")["cluster"].nunique().max() == 1  # a group never spans two clusters
    assert len(shared_units([table.drop(columns="cluster")])) == 60  # older tables: one unit per group
    # the unit changes the interval, never the point estimate
    wide = bootstrap_ci(table, "map", "multi", replicates=400)
    narrow = bootstrap_ci(table.drop(columns="cluster"), "map", "multi", replicates=400)
    assert wide["mean"] == pytest.approx(narrow["mean"])
