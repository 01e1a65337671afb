"""Language-bias measures (hybridlib.evaluation.bias): the probe, the LDA projection and per-language mean-centring, on
synthetic spaces whose bias is known, on real XQuAD-R structure, and as the per-query table and the sweep
tables (hybridlib.analysis) carry them."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import datasets
import numpy as np
import pandas as pd
import pytest

from hybridlib.data.ids import paragraph_of
from hybridlib.evaluation import bias
from hybridlib.evaluation.stats import wilson_interval
from hybridlib.evaluation.metrics import CENTRED, GOLD_RANKS, TOP_IDS, build_eval_index, evaluate_embeddings
from hybridlib.evaluation.stats import bootstrap_ci, paired_test

REAL_DATA = pytest.mark.skipif(not os.environ.get("HYBRIDLIB_DATA_DIR"), reason="HYBRIDLIB_DATA_DIR is unset")


@dataclass
class ToyBenchmark:
    name: str
    languages: list[str]
    queries: datasets.Dataset
    candidates: datasets.Dataset
    relevant: dict[str, set[str]]


def offset_space(offset: float, groups: int = 40, languages=("de", "en", "fr", "zh"), sentences: int = 4,
                 dim: int = 48, noise: float = 0.35, seed: int = 0):
    """A LAReQA-shaped benchmark and embeddings: content + ``offset`` x a fixed vector per language + noise.

    Paragraph g in every language holds ``sentences`` sentences; sentence 0 is the gold of question g. With
    offset 0 the space is language-neutral; with a large one, the bias is exactly a constant per-language offset.
    """
    rng = np.random.default_rng(seed)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    content = unit(rng.standard_normal((groups, sentences, dim)))
    lang_vec = unit(rng.standard_normal((len(languages), dim)))
    cand_rows, cand_vecs, query_rows, query_vecs, relevant = [], [], [], [], {}
    for li, lang in enumerate(languages):
        for g in range(groups):
            for s in range(sentences):
                cand_rows.append({"id": f"{lang}:0:{g}:{s}", "lang": lang, "text": f"{lang} {g} {s}", "context": ""})
                cand_vecs.append(content[g, s] + offset * lang_vec[li] + noise * rng.standard_normal(dim) / dim**0.5)
            query_rows.append({"id": f"{lang}:q{g}", "group": f"q{g}", "lang": lang, "text": f"{lang} question {g}"})
            query_vecs.append(content[g, 0] + offset * lang_vec[li] + noise * rng.standard_normal(dim) / dim**0.5)
    for row in query_rows:
        g = row["group"][1:]
        relevant[row["id"]] = {f"{lang}:0:{g}:0" for lang in languages}
    bench = ToyBenchmark("toy", sorted(languages), datasets.Dataset.from_list(query_rows),
                         datasets.Dataset.from_list(cand_rows), relevant)
    return bench, unit(np.array(query_vecs)).astype(np.float32), unit(np.array(cand_vecs)).astype(np.float32)


def measures(bench, q, c):
    index = build_eval_index(bench)
    report, per_query = evaluate_embeddings(bench, q, c, index=index)
    found, per_query = bias.evaluate_bias(bench, q, c, report, per_query, index=index)
    return report, found, per_query


# --- pieces ---------------------------------------------------------------------------------------------------


def test_wilson_interval_matches_the_formula_and_stays_inside_0_1():
    low, high = wilson_interval(50, 100)
    assert (low, high) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(100, 100)[1] == 1.0 and 0.96 < wilson_interval(100, 100)[0] < 0.97
    assert wilson_interval(0, 20)[0] == 0.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_centring_removes_each_language_mean_and_keeps_unit_length():
    rng = np.random.default_rng(1)
    codes = np.repeat([0, 1, 2], 30)
    x = rng.standard_normal((90, 8)) + np.repeat(rng.standard_normal((3, 8)) * 5, 30, axis=0)
    centred = bias.centre_by_language(x, codes)
    assert np.allclose(np.linalg.norm(centred, axis=1), 1, atol=1e-5)
    raw = x.copy()
    for code in range(3):
        raw[codes == code] -= raw[codes == code].mean(axis=0)
    assert np.allclose(centred, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_pooled_rows_store_the_top_ids_and_every_gold_rank_by_hand():
    # candidates en:e0 en:e1 de:d0 de:d1; one group, golds e0 and d0
    bench = ToyBenchmark("toy", ["de", "en"],
                         datasets.Dataset.from_dict({"id": ["de:g", "en:g"], "group": ["g", "g"], "lang": ["de", "en"],
                                                     "text": ["q de", "q en"]}),
                         datasets.Dataset.from_dict({"id": ["en:e0", "en:e1", "de:d0", "de:d1"],
                                                     "lang": ["en", "en", "de", "de"], "text": list("abcd"),
                                                     "context": list("abcd")}),
                         {"de:g": {"en:e0", "de:d0"}, "en:g": {"en:e0", "de:d0"}})
    scores = np.array([[0.2, 0.9, 0.5, 0.1],   # de:g: e1, d0, e0, d1 -> golds d0 at 2, e0 at 3
                       [0.8, 0.3, 0.1, 0.6]])  # en:g: e0, d1, e1, d0 -> golds e0 at 1, d0 at 4
    q = (scores / np.linalg.norm(scores, axis=1, keepdims=True)).astype(np.float32)
    _, frame = evaluate_embeddings(bench, q, np.eye(4, dtype=np.float32))
    multi = frame[frame.setting == "multi"].set_index("query_id")
    assert multi.loc["de:g", TOP_IDS] == "en:e1 de:d0 en:e0 de:d1"
    assert multi.loc["en:g", TOP_IDS] == "en:e0 de:d1 en:e1 de:d0"
    assert multi.loc["de:g", GOLD_RANKS] == "en:3 de:2"  # in candidate row order: e0, then d0
    assert multi.loc["en:g", GOLD_RANKS] == "en:1 de:4"
    assert frame.loc[frame.setting != "multi", TOP_IDS].isna().all()


# --- what the measures find on spaces with known bias -----------------------------------------------------------


def test_a_constant_language_offset_is_what_centring_removes():
    report, found, per_query = measures(*offset_space(offset=1.2))
    centred, probe = found["centred"], found["language_probe"]
    assert report["map"]["mono"] - report["map"]["multi"] > 0.2  # pooling costs a lot: the offset dominates
    assert report["top10_same_language"] > 0.6
    assert centred["map_gap_closed"] > 0.8 and centred["rank_distance_removed"] > 0.5
    assert centred["map"]["multi"] > report["map"]["multi"] + 0.2
    assert centred["top10_same_language"] < 0.45
    assert probe["accuracy"] > 0.98 and probe["low"] > 0.95 and probe["chance"] == 0.25
    assert probe["split"].startswith("translated paragraphs") and probe["folds"] == 5
    assert set(CENTRED.values()) <= set(per_query.columns)


def test_a_language_neutral_space_has_nothing_to_remove():
    report, found, _ = measures(*offset_space(offset=0.0, noise=1.0))
    centred, probe = found["centred"], found["language_probe"]
    assert 0.3 < report["map"]["multi"] < 0.95  # not trivially easy
    assert abs(report["map"]["multi"] - centred["map"]["multi"]) < 0.03
    assert abs(centred["map_gap"] - centred["map_gap_centred"]) < 0.03
    assert probe["accuracy"] < 0.45  # chance 0.25: the language is not readable
    assert probe["low"] < probe["accuracy"] < probe["high"]


def test_centred_columns_give_the_reported_scores_and_work_with_the_stats():
    bench, q, c = offset_space(offset=1.2)
    _, found, per_query = measures(bench, q, c)
    ci = bootstrap_ci(per_query, "map_centred", "multi", replicates=200)
    assert ci["mean"] == pytest.approx(found["centred"]["map"]["multi"])
    assert bootstrap_ci(per_query, "rank_distance_centred", "multi", replicates=50)["mean"] == pytest.approx(
        found["centred"]["rank_distance"])
    # a paired test of the centred pooled mAP against the plain one of the same run: a real shift
    plain = per_query.assign(ap_centred=per_query["ap"])
    test = paired_test(per_query, plain, "map_centred", "multi", permutations=500, replicates=500)
    assert test["difference"] > 0.2 and test["p_value"] < 0.01
    with pytest.raises(ValueError, match="no rank_distance_centred values"):
        bootstrap_ci(per_query, "rank_distance_centred", "mono")


def test_lda_projection_separates_offset_languages_and_handles_few_languages():
    bench, _, c = offset_space(offset=1.2)
    frame = bias.lda_projection(bench, c)
    assert list(frame.columns) == ["candidate_id", "lang", "ld1", "ld2"] and len(frame) == len(c)
    means = frame.groupby("lang")[["ld1", "ld2"]].mean()
    spread = frame.groupby("lang")[["ld1", "ld2"]].std().mean().mean()
    assert np.min([np.linalg.norm(means.iloc[i] - means.iloc[j]) for i in range(4) for j in range(i)]) > 3 * spread
    two, _, c2 = offset_space(offset=1.0, languages=("de", "en"), groups=10)
    assert (bias.lda_projection(two, c2)["ld2"] == 0).all()  # two languages: one discriminant axis
    one, _, c1 = offset_space(offset=1.0, languages=("en",), groups=10)
    assert bias.lda_projection(one, c1) is None
    assert bias.language_probe(c1, ["en"] * len(c1)) is None


@REAL_DATA
def test_translation_groups_keep_parallel_paragraphs_together_on_xquad(data_dir):
    from hybridlib.data.benchmarks import load_benchmark

    bench = load_benchmark("xquad-r", languages=["de", "en", "zh"], max_groups=60, data_dir=data_dir)
    groups = bias.translation_groups(bench)
    frame = pd.DataFrame({"paragraph": [paragraph_of(c) for c in bench.candidates["id"]],
                          "lang": bench.candidates["lang"], "group": groups})
    # XQuAD is parallel: a group holds the same paragraph in each of the three languages, and nothing else
    per_group = frame.drop_duplicates("paragraph").groupby("group")["lang"].agg(sorted)
    assert len(per_group) >= 5 and all(langs == ["de", "en", "zh"] for langs in per_group)
    # every question's golds fall in one group
    position = {cid: g for cid, g in zip(bench.candidates["id"], groups)}
    assert all(len({position[c] for c in golds}) == 1 for golds in bench.relevant.values())
    rng = np.random.default_rng(0)
    probe = bias.language_probe(rng.standard_normal((len(groups), 16)), bench.candidates["lang"], groups)
    assert probe["split"].startswith("translated paragraphs") and probe["accuracy"] < 0.6  # random: near 1/3


# --- the sweep tables ----------------------------------------------------------------------------------------


def test_untrained_points_show_no_ratios_and_bias_tables_need_the_records(tmp_path):
    from hybridlib import analysis
    from hybridlib.runs.experiment import write_metrics

    bench, q, c = offset_space(offset=1.2, groups=20, noise=1.0)
    index = build_eval_index(bench)
    for name, steps, seed, scale in (("baseline", 0, 0, 1.0), ("mix-s0", 10, 0, 0.3), ("mix-s1", 10, 1, 0.35)):
        qs, cs = bias.centred_embeddings(index, q, c)
        qq = q * scale + qs * (1 - scale)  # a "trained" run: part of the offset gone
        cc = c * scale + cs * (1 - scale)
        qq, cc = [(x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32) for x in (qq, cc)]
        report, per_query = evaluate_embeddings(bench, qq, cc, index=index)
        found, per_query = bias.evaluate_bias(bench, qq, cc, report, per_query, index=index)
        report.update(found)
        params = {"run_name": name, "point": name.split("-")[0], "steps": steps, "seed": seed, "mix": "per_batch",
                  "ratio_mono": 0.5, "ratio_cross": 0.5, "ratio_multi": 0.0}
        folder = tmp_path / name
        folder.mkdir()
        tables = {"projection": bias.lda_projection(bench, cc).rename(columns={"ld1": "pc1", "ld2": "pc2"}),
                  "projection-lda": bias.lda_projection(bench, cc)}  # as the LAReQA task returns them
        write_metrics(folder, params, {"toy": {"metrics": report, "per_query": per_query, "tables": tables,
                                               "timings": {}}}, {}, [])
    runs = analysis.load_runs(tmp_path)
    table = analysis.scores_table(runs, "toy")
    assert table.loc["baseline", ["ratio_mono", "ratio_cross", "ratio_multi"]].isna().all()
    assert pd.isna(table.loc["baseline", "mix"]) and table.loc["baseline", "label"] == "no fine-tuning"
    assert table.loc["mix-s0", "ratio_mono"] == 0.5
    assert 0.25 < table.loc["mix-s0", "language_probe"] < table.loc["baseline", "language_probe"]  # less readable
    points = analysis.point_scores(runs, "toy", metrics=[("map_centred", "multi"), ("rank_distance_centred", "multi")],
                                   replicates=100)
    assert points.loc["baseline", ["ratio_mono", "ratio_cross"]].isna().all() and points.loc["mix", "seeds"] == 2
    assert "rank_distance_centred_multi" in analysis.with_intervals(
        points, [("rank_distance_centred", "multi")]).columns
    assert analysis.has_bias_measures(runs, "toy")
    probes = analysis.probe_scores(runs, "toy")
    assert probes.loc["mix", "language_probe_low"] <= probes.loc["mix", "language_probe"] <= probes.loc[
        "mix", "language_probe_high"]
    effect = analysis.centring_effect(runs, "toy", replicates=200)
    assert effect.loc["baseline", "map_gap_closed"] > 0.8  # all of the toy's bias is an offset
    assert effect.loc["mix", "map_gap_closed"] < effect.loc["baseline", "map_gap_closed"]  # less left to remove
    for name in analysis.CENTRING_MEASURES:
        assert (effect[f"{name}_low"] <= effect[name] + 1e-9).all() and (effect[name] <= effect[f"{name}_high"] + 1e-9).all()
    assert "n/a" not in analysis.centring_summary(effect).to_string()
    assert analysis.projection(runs[0], "toy", "lda") is not None
    tests = analysis.paired_tests(runs, "toy", "map_centred", "multi", permutations=200)
    assert len(tests) == 1 and 0 <= tests["p_value"].iloc[0] <= 1
    # a run recorded before the measures existed: the tables say so instead of failing
    old = dict(runs[0], benchmarks={"toy": {k: v for k, v in runs[0]["benchmarks"]["toy"].items()
                                            if k not in ("language_probe", "centred")}})
    assert not analysis.has_bias_measures([old, *runs[1:]], "toy")
    assert pd.isna(analysis.scores_table([old], "toy").loc["baseline", "language_probe"])
