"""Tests of hybridlib.evaluation.metrics: hand-computed cases, brute-force ranks, ranx parity on real data, timing."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass

import datasets
import numpy as np
import pandas as pd
import pytest

from hybridlib.evaluation.metrics import (
    METRICS, SETTINGS, build_eval_index, evaluate_embeddings, per_query_scores, relevant_ranks, summarize_scores)

REAL_DATA = pytest.mark.skipif(
    not os.environ.get("HYBRIDLIB_DATA_DIR"),
    reason="HYBRIDLIB_DATA_DIR is unset: real-data tests need the XQuAD-R / MLQA-R folder (e.g. ../shared/data)",
)


# --- helpers -------------------------------------------------------------------------------------


@dataclass
class FakeBenchmark:
    """Same fields as hybridlib.data.Benchmark, built by hand."""

    name: str
    languages: list[str]
    queries: datasets.Dataset
    candidates: datasets.Dataset
    relevant: dict[str, set[str]]


def make_benchmark(candidates: list[str], queries: list[str], relevant: dict[str, list[str]]) -> FakeBenchmark:
    """Candidates as "lang:name", queries as "lang:group"; relevant maps a query id to candidate ids."""
    cand_langs = [c.split(":")[0] for c in candidates]
    return FakeBenchmark(
        name="toy",
        languages=sorted(set(cand_langs) | {q.split(":")[0] for q in queries}),
        queries=datasets.Dataset.from_dict(
            {
                "id": queries,
                "group": [q.split(":")[1] for q in queries],
                "lang": [q.split(":")[0] for q in queries],
                "text": queries,
            }
        ),
        candidates=datasets.Dataset.from_dict(
            {"id": candidates, "lang": cand_langs, "text": candidates, "context": candidates}
        ),
        relevant={q: set(r) for q, r in relevant.items()},
    )


def embeddings_for_scores(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Query/candidate embeddings whose inner products rank like ``scores`` (candidates = unit basis)."""
    scores = np.asarray(scores, dtype=np.float32)
    queries = scores / np.linalg.norm(scores, axis=1, keepdims=True)  # positive rescaling keeps the order
    return queries.astype(np.float32), np.eye(scores.shape[1], dtype=np.float32)


def scores_from_order(order: list[int], n: int) -> list[float]:
    """Scores that put candidate order[0] first, order[1] second, ... (all positive)."""
    scores = np.zeros(n)
    scores[order] = np.linspace(1.0, 0.1, n)
    return scores.tolist()


def row(frame: pd.DataFrame, setting: str, query_id: str, corpus_lang: str | None = None) -> pd.Series:
    hit = frame[(frame["setting"] == setting) & (frame["query_id"] == query_id)]
    if corpus_lang is not None:
        hit = hit[hit["corpus_lang"] == corpus_lang]
    assert len(hit) == 1, (setting, query_id, corpus_lang, hit)
    return hit.iloc[0]


def assert_plain_json(value) -> None:
    """Only dict/list/str/int/float/bool/None all the way down (no numpy scalars)."""
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for v in value.values():
            assert_plain_json(v)
    elif isinstance(value, list):
        for v in value:
            assert_plain_json(v)
    else:
        assert value is None or type(value) in (str, int, float, bool), (type(value), value)


# --- hand-computed cases -------------------------------------------------------------------------


def two_language_toy() -> tuple[FakeBenchmark, np.ndarray, np.ndarray]:
    # candidates (index): en:e0 (0), en:e1 (1), en:e2 (2), de:d0 (3), de:d1 (4), de:d2 (5)
    # group g1 -> golds e0, d0; group g2 -> golds e1, d1
    bench = make_benchmark(
        candidates=["en:e0", "en:e1", "en:e2", "de:d0", "de:d1", "de:d2"],
        queries=["de:g1", "de:g2", "en:g1", "en:g2"],
        relevant={"de:g1": ["en:e0", "de:d0"], "de:g2": ["en:e1", "de:d1"],
                  "en:g1": ["en:e0", "de:d0"], "en:g2": ["en:e1", "de:d1"]},
    )
    scores = np.array(
        [
            # de:g1: pooled order d0 .9, e0 .8, ...: both golds on top
            [0.8, 0.1, 0.2, 0.9, 0.3, 0.4],
            # de:g2: pooled order e2 .9, d2 .8, e1 .7, d0 .6, d1 .5, e0 .1
            [0.1, 0.7, 0.9, 0.6, 0.5, 0.8],
            # en:g1: pooled order e1 .9, d1 .8, d2 .7, e0 .5, d0 .3, e2 .1
            [0.5, 0.9, 0.1, 0.3, 0.8, 0.7],
            # en:g2: pooled order e1 .9, d1 .8, ...: both golds on top
            [0.2, 0.9, 0.3, 0.4, 0.8, 0.1],
        ]
    )
    return (bench, *embeddings_for_scores(scores))


def test_hand_computed_per_query_values():
    bench, q, c = two_language_toy()
    frame = per_query_scores(bench, q, c)
    # en:g1 mono (corpus e0 .5, e1 .9, e2 .1): gold e0 at rank 2 -> AP 1/2, R@1 0, R@10 1
    r = row(frame, "mono", "en:g1")
    assert (r["ap"], r["ap@20"], r["recall@1"], r["recall@10"]) == pytest.approx((0.5, 0.5, 0.0, 1.0))
    # en:g1 cross to de (d0 .3, d1 .8, d2 .7): gold d0 at rank 3 -> AP 1/3
    r = row(frame, "cross", "en:g1", "de")
    assert (r["ap"], r["ap@20"], r["recall@1"], r["recall@10"]) == pytest.approx((1 / 3, 1 / 3, 0.0, 1.0))
    # en:g1 multi: golds e0 at rank 4, d0 at rank 5 -> AP (1/4 + 2/5)/2 = 0.325, rank distance 5 - 4 = 1
    r = row(frame, "multi", "en:g1")
    assert (r["ap"], r["ap@20"], r["recall@1"], r["recall@10"]) == pytest.approx((0.325, 0.325, 0.0, 1.0))
    assert (r["rank_first"], r["rank_last"], r["rank_distance"]) == (4, 5, 1)
    assert (r["rank_same_lang"], r["rank_other_best"], r["rank_other_mean"]) == (4, 5, 5)
    # de:g2 mono (d0 .6, d1 .5, d2 .8): gold d1 at rank 3 -> AP 1/3; cross to en (e0 .1, e1 .7, e2 .9): rank 2
    assert row(frame, "mono", "de:g2")["ap"] == pytest.approx(1 / 3)
    assert row(frame, "cross", "de:g2", "en")["ap"] == pytest.approx(1 / 2)
    # de:g2 multi: e1 rank 3, d1 rank 5 -> AP (1/3 + 2/5)/2 = 11/30; same-language gold (d1) is the worse one
    r = row(frame, "multi", "de:g2")
    assert r["ap"] == pytest.approx(11 / 30)
    assert (r["rank_same_lang"], r["rank_other_best"], r["rank_distance"]) == (5, 3, 2)
    # the two easy queries: everything perfect, rank distance 1 (ranks 1 and 2)
    for qid in ("de:g1", "en:g2"):
        for setting in SETTINGS:
            assert (frame.loc[(frame["query_id"] == qid) & (frame["setting"] == setting), "ap"] == 1.0).all()
        assert row(frame, "multi", qid)["rank_distance"] == 1


def test_hand_computed_aggregates():
    bench, q, c = two_language_toy()
    report = evaluate_embeddings(bench, q, c).report
    # mono AP per query: de:g1 1, de:g2 1/3, en:g1 1/2, en:g2 1 -> de 2/3, en 3/4 -> mean 17/24
    assert report["map"]["mono"] == pytest.approx(17 / 24)
    # cross: de->en: de:g1 1, de:g2 1/2 -> 3/4; en->de: en:g1 1/3, en:g2 1 -> 2/3; mean of pairs 17/24
    assert report["map"]["cross"] == pytest.approx(17 / 24)
    # multi: de: (1 + 11/30)/2 = 41/60; en: (0.325 + 1)/2 = 0.6625 -> mean 0.67291666...
    assert report["map"]["multi"] == pytest.approx((41 / 60 + 0.6625) / 2)
    # recall@1 multi: |relevant in top 1| / 2 = 1/2 for the easy queries, 0 otherwise -> 1/4 each language
    assert report["recall@1"]["multi"] == pytest.approx(0.25)
    # rank distance: de (1 + 2)/2 = 1.5, en (1 + 1)/2 = 1 -> 1.25
    assert report["rank_distance"] == pytest.approx(1.25)
    assert report["per_language"]["de"]["rank_distance"] == pytest.approx(1.5)
    assert report["per_language"]["en"]["map"]["cross"] == pytest.approx(2 / 3)
    assert report["per_language"]["en"]["num_queries"] == 2
    assert report["pairs"] == {
        "de": {"de": pytest.approx(2 / 3), "en": pytest.approx(3 / 4)},
        "en": {"de": pytest.approx(2 / 3), "en": pytest.approx(3 / 4)},
    }
    assert (report["num_queries"], report["num_candidates"], report["languages"]) == (4, 6, ["de", "en"])
    # all 6 candidates are in every pooled top 10, half of them in the query's language
    assert report["top10_same_language"] == pytest.approx(0.5)
    assert report["per_language"]["de"]["top10_same_language"] == pytest.approx(0.5)
    extra = {"rank_distance", "top10_same_language", "per_language", "pairs", "num_queries", "num_candidates",
             "languages"}
    assert set(report) == set(METRICS) | extra
    assert_plain_json(report)
    json.dumps(report, allow_nan=False)
    assert evaluate_embeddings(bench, q, c, progress=True).report == report


def test_same_language_share_of_the_top_k_by_hand():
    from hybridlib.evaluation.metrics import build_eval_index, pooled_top_k, same_language_share_of

    bench, q, c = two_language_toy()
    # top 3 -- de:g1: d0 e0 d2 (2 de); de:g2: e2 d2 e1 (1 de); en:g1: e1 d1 d2 (1 en); en:g2: e1 d1 d0 (1 en)
    shares = same_language_share_of(build_eval_index(bench), pooled_top_k(q, c, k=3))
    assert shares == pytest.approx([2 / 3, 1 / 3, 1 / 3, 1 / 3])
    # the pooled rows of the per-query table carry the top-10 share (every candidate here: 1/2)
    _, frame = evaluate_embeddings(bench, q, c)
    assert frame.loc[frame.setting == "multi", "top10_same_language"].tolist() == [0.5] * 4
    assert frame.loc[frame.setting != "multi", "top10_same_language"].isna().all()


def test_summary_of_resampled_table_weighs_duplicates():
    bench, q, c = two_language_toy()
    frame = per_query_scores(bench, q, c)
    doubled = summarize_scores(pd.concat([frame, frame], ignore_index=True))
    assert doubled["map"] == summarize_scores(frame)["map"]
    assert doubled["per_language"]["en"]["num_queries"] == 4
    # keep only en:g1 twice and en:g2 once for the en mono cell: (2 * 1/2 + 1) / 3
    en_mono = frame[(frame["setting"] == "mono") & (frame["lang"] == "en")]
    resampled = pd.concat([frame[frame["lang"] == "de"], en_mono.iloc[[0, 0, 1]]], ignore_index=True)
    assert en_mono["query_id"].tolist() == ["en:g1", "en:g2"]
    assert summarize_scores(resampled)["per_language"]["en"]["map"]["mono"] == pytest.approx(2 / 3)


def test_map_at_20_divides_by_min_20_and_relevant_count():
    # 15 candidates per language; one query whose golds sit at pooled ranks 3 (en:5) and 25 (de:7)
    cands = [f"en:{i}" for i in range(15)] + [f"de:{i}" for i in range(15)]
    bench = make_benchmark(cands, ["en:g"], {"en:g": ["en:5", "de:7"]})
    others = [i for i in range(30) if i not in (5, 22)]
    order = others[:2] + [5] + others[2:23] + [22] + others[23:]  # index 22 = de:7
    q, c = embeddings_for_scores([scores_from_order(order, 30)])
    r = row(per_query_scores(bench, q, c, setting="multi"), "multi", "en:g")
    # AP = (1/3 + 2/25)/2; AP@20 counts only the rank-3 hit: (1/3)/min(20, 2); R@10 = 1/2
    assert r["ap"] == pytest.approx((1 / 3 + 2 / 25) / 2)
    assert r["ap@20"] == pytest.approx((1 / 3) / 2)
    assert (r["recall@1"], r["recall@10"], r["rank_distance"]) == (0.0, 0.5, 22)


def test_ties_break_by_lower_candidate_index():
    # all candidates identical -> every score ties; order is the candidate index
    bench = make_benchmark(
        ["en:a", "en:b", "en:c", "de:a", "de:b", "de:c"], ["en:g"], {"en:g": ["en:b", "de:b"]}
    )
    q = np.ones((1, 4), dtype=np.float32) / 2
    c = np.tile(q, (6, 1))
    frame = per_query_scores(bench, q, c)
    # mono: en:b is second of en -> AP 1/2; cross: de:b second of de -> 1/2
    assert row(frame, "mono", "en:g")["ap"] == pytest.approx(0.5)
    assert row(frame, "cross", "en:g", "de")["ap"] == pytest.approx(0.5)
    # multi: pooled ranks 2 and 5 -> AP (1/2 + 2/5)/2 = 0.45, rank distance 3
    r = row(frame, "multi", "en:g")
    assert r["ap"] == pytest.approx(0.45) and r["rank_distance"] == 3


def test_cross_pairs_without_gold_are_skipped_not_zero():
    # g1 exists in en and de only, g2 in en and ar only (the MLQA-R shape)
    bench = make_benchmark(
        ["ar:x", "ar:g2", "de:g1", "de:x", "en:g1", "en:g2"],
        ["ar:g2", "de:g1", "en:g1", "en:g2"],
        {"ar:g2": ["ar:g2", "en:g2"], "de:g1": ["de:g1", "en:g1"],
         "en:g1": ["de:g1", "en:g1"], "en:g2": ["ar:g2", "en:g2"]},
    )
    # every query ranks its golds first, except en:g1, which puts de:x above de:g1 (cross en->de AP 1/2)
    scores = np.full((4, 6), 0.1)
    for i, golds in enumerate([(1, 5), (2, 4), (2, 4), (1, 5)]):
        scores[i, list(golds)] = 1.0
    scores[2, 3] = 2.0
    q, c = embeddings_for_scores(scores)
    report = evaluate_embeddings(bench, q, c).report
    frame = per_query_scores(bench, q, c, setting="cross")
    assert sorted(zip(frame["query_id"], frame["corpus_lang"])) == [
        ("ar:g2", "en"), ("de:g1", "en"), ("en:g1", "de"), ("en:g2", "ar")
    ]
    # pairs: ar->en 1, de->en 1, en->de 1/2, en->ar 1; ar->de and de->ar have no scored query and are absent
    assert report["pairs"]["ar"] == {"ar": 1.0, "en": 1.0}
    assert report["pairs"]["de"] == {"de": 1.0, "en": 1.0}
    assert report["pairs"]["en"] == {"ar": 1.0, "de": 0.5, "en": 1.0}
    # cross = mean over the 4 scored pairs (not over 6 with zeros): (1 + 1 + 0.5 + 1)/4
    assert report["map"]["cross"] == pytest.approx(3.5 / 4)
    assert report["per_language"]["en"]["map"]["cross"] == pytest.approx(0.75)


def test_single_language_has_no_cross_and_no_rank_distance():
    bench = make_benchmark(["en:a", "en:b"], ["en:g"], {"en:g": ["en:b"]})
    q, c = embeddings_for_scores([[0.9, 0.1]])
    report = evaluate_embeddings(bench, q, c).report
    assert report["map"] == {"mono": 0.5, "cross": None, "multi": 0.5}
    assert report["rank_distance"] is None and report["pairs"] == {"en": {"en": 0.5}}
    json.dumps(report, allow_nan=False)


def test_input_validation():
    bench, q, c = two_language_toy()
    with pytest.raises(ValueError, match="embeddings"):
        evaluate_embeddings(bench, q[:3], c)
    bad = q.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_embeddings(bench, bad, c)
    with pytest.raises(ValueError, match="unknown setting"):
        per_query_scores(bench, q, c, setting="pooled")


# --- real relevance structure --------------------------------------------------------------------


@pytest.fixture(scope="module")
def xquad_small():
    from hybridlib.data.benchmarks import load_benchmark

    return load_benchmark("xquad-r", languages=["de", "en", "zh"], max_groups=200)


@pytest.fixture(scope="module")
def mlqa_small():
    from hybridlib.data.benchmarks import load_benchmark

    return load_benchmark("mlqa-r", max_groups=300)  # all 7 languages


def noisy_group_embeddings(bench, seed: int = 0, dim: int = 64, noise: float = 0.9, lang_bias: float = 0.5):
    """Seeded embeddings with real structure: a vector per group (golds share it), a vector per language."""
    rng = np.random.default_rng(seed)
    groups = sorted(set(bench.queries["group"]))
    group_vec = dict(zip(groups, rng.standard_normal((len(groups), dim))))
    lang_vec = dict(zip(bench.languages, rng.standard_normal((len(bench.languages), dim))))
    gold_groups = defaultdict(list)
    for qid, group in zip(bench.queries["id"], bench.queries["group"]):
        for cid in bench.relevant[qid]:
            gold_groups[cid].append(group)

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    cand = []
    for cid, lang in zip(bench.candidates["id"], bench.candidates["lang"]):
        if cid in gold_groups:  # a sentence gold for several groups sits between their vectors
            base = np.mean([group_vec[g] for g in gold_groups[cid]], axis=0)
        else:
            base = rng.standard_normal(dim)
        cand.append(base + lang_bias * lang_vec[lang] + noise * rng.standard_normal(dim))
    query = [group_vec[g] + lang_bias * lang_vec[lang] + noise * rng.standard_normal(dim)
             for g, lang in zip(bench.queries["group"], bench.queries["lang"])]
    return unit(np.array(query)), unit(np.array(cand))


@REAL_DATA
def test_ranks_match_brute_force_ranking_with_many_ties(mlqa_small):
    # 3-dim integer embeddings: scores take a handful of values, so almost everything ties
    rng = np.random.default_rng(1)
    q = rng.integers(-1, 2, (len(mlqa_small.queries), 3)).astype(np.float32)
    c = rng.integers(-1, 2, (len(mlqa_small.candidates), 3)).astype(np.float32)
    index = build_eval_index(mlqa_small)
    ranks = relevant_ranks(index, q, c, threads=2)
    scores = q @ c.T
    # reference ranking: a stable sort of -score keeps equal scores in candidate-index order
    n = scores.shape[1]
    pooled_rank = np.empty((len(scores), n), dtype=np.int64)
    np.put_along_axis(pooled_rank, np.argsort(-scores, axis=1, kind="stable"), np.arange(1, n + 1)[None, :], axis=1)
    lang_rank = np.zeros_like(pooled_rank)
    for y in range(len(index.languages)):
        cols = np.flatnonzero(index.candidate_lang == y)
        order = cols[np.argsort(-scores[:, cols], axis=1, kind="stable")]
        np.put_along_axis(lang_rank, order, np.arange(1, len(cols) + 1)[None, :], axis=1)
    rel, ok = np.maximum(index.relevant, 0), index.relevant_mask
    np.testing.assert_array_equal(ranks.pooled[ok], np.take_along_axis(pooled_rank, rel, axis=1)[ok])
    np.testing.assert_array_equal(ranks.in_language[ok], np.take_along_axis(lang_rank, rel, axis=1)[ok])
    single = relevant_ranks(index, q, c, threads=1)
    np.testing.assert_array_equal(single.pooled, ranks.pooled)


def ranx_per_query(bench, scores: np.ndarray) -> pd.DataFrame:
    """Per-query metrics from ranx on the same scores, for every setting; one ranx query per (query, corpus).

    The run lists each corpus candidate by (score desc, candidate index asc) via np.lexsort, the same
    tie rule as hybridlib.evaluation.metrics, handed to ranx as strictly decreasing scores. It is cut after the
    last relevant candidate: lower items change neither AP (no cutoff) nor recall@k, and the cut
    keeps the ranx run small.
    """
    from ranx import Qrels, Run, evaluate

    cand_ids = np.asarray(bench.candidates["id"][:], dtype=object)
    cand_lang = np.asarray(bench.candidates["lang"][:], dtype=object)
    columns = {y: np.flatnonzero(cand_lang == y) for y in bench.languages}
    columns[None] = np.arange(len(cand_ids))
    position = {cid: i for i, cid in enumerate(cand_ids)}
    qrels, run, meta = {}, {}, {}
    for i, (qid, qlang) in enumerate(zip(bench.queries["id"][:], bench.queries["lang"][:])):
        rel = np.array(sorted(position[cid] for cid in bench.relevant[qid]))
        is_rel = np.zeros(len(cand_ids), dtype=bool)
        is_rel[rel] = True
        corpora = [("mono", qlang), ("multi", None)] + [("cross", y) for y in bench.languages if y != qlang]
        for setting, y in corpora:
            cols = columns[y]
            rel_here = rel if y is None else rel[cand_lang[rel] == y]
            if len(rel_here) == 0:
                continue  # the group has no gold in this corpus: skipped
            order = cols[np.lexsort((cols, -scores[i, cols]))]
            last = np.flatnonzero(is_rel[order]).max()
            key = f"{setting}|{qid}|{y}"
            qrels[key] = {cand_ids[j]: 1 for j in rel_here}
            run[key] = {cand_ids[j]: float(len(order) - p) for p, j in enumerate(order[: last + 1])}
            meta[key] = (setting, qid, qlang, y or "all")
    ranx_run = Run(run)
    metrics = ["map", "map@20", "recall@1", "recall@10"]
    # ranx's map@k divides by |R| where XTREME-R divides by min(k, |R|); equal here since |R| <= 11 < 20
    evaluate(Qrels(qrels), ranx_run, metrics)
    frame = pd.DataFrame({m: pd.Series(dict(ranx_run.scores[m])) for m in metrics})
    keys = ["setting", "query_id", "lang", "corpus_lang"]
    frame[keys] = pd.DataFrame([meta[k] for k in frame.index], index=frame.index)
    return frame.rename(columns={"map": "ap", "map@20": "ap@20"}).reset_index(drop=True)


@REAL_DATA
@pytest.mark.parametrize("which", [pytest.param("xquad", marks=pytest.mark.slow), "mlqa"])
def test_parity_with_ranx_on_real_relevance(which, xquad_small, mlqa_small):
    bench = {"xquad": xquad_small, "mlqa": mlqa_small}[which]
    assert max(len(r) for r in bench.relevant.values()) <= 20  # so ranx's map@20 divisor equals ours
    # noise chosen so that mAP lands mid-range (about .4 to .7) on both benchmarks
    q, c = noisy_group_embeddings(bench, noise={"xquad": 0.9, "mlqa": 1.2}[which])
    ours = per_query_scores(bench, q, c)
    report = evaluate_embeddings(bench, q, c).report
    keys = ["setting", "query_id", "lang", "corpus_lang"]
    ref = ranx_per_query(bench, q @ c.T)
    merged = ref.merge(ours, on=keys, suffixes=("_ranx", ""), validate="1:1")
    assert len(merged) == len(ref) == len(ours)  # the same (query, corpus) units are scored and skipped
    for setting in SETTINGS:
        part = merged[merged["setting"] == setting]
        assert len(part) > 0, setting
        for column in ("ap", "ap@20", "recall@1", "recall@10"):
            np.testing.assert_allclose(part[column], part[f"{column}_ranx"], atol=1e-6, err_msg=f"{setting} {column}")
            # macro averages rebuilt from ranx's per-query values
            cell = part.groupby(["lang", "corpus_lang"])[f"{column}_ranx"].mean()
            expected = cell.mean() if setting == "cross" else cell.groupby("lang").mean().mean()
            metric = {"ap": "map", "ap@20": "map@20"}.get(column, column)
            assert report[metric][setting] == pytest.approx(expected, abs=1e-6), (setting, column)
    # the embeddings are informative but imperfect, so the parity is not on trivial values
    assert 0.2 < report["map"]["multi"] < 0.9 and report["rank_distance"] > 10


@REAL_DATA
def test_mlqa_cross_pairs_score_only_queries_with_gold_in_corpus_language(mlqa_small):
    q, c = noisy_group_embeddings(mlqa_small, seed=3)
    frame = per_query_scores(mlqa_small, q, c, setting="cross")
    report = evaluate_embeddings(mlqa_small, q, c).report
    groups_in = defaultdict(set)
    for group, lang in zip(mlqa_small.queries["group"], mlqa_small.queries["lang"]):
        groups_in[lang].add(group)
    scored = frame.groupby(["lang", "corpus_lang"]).size()
    queries = pd.DataFrame({"group": mlqa_small.queries["group"], "lang": mlqa_small.queries["lang"]})
    skipped_some = False
    for x in mlqa_small.languages:
        x_groups = queries.loc[queries["lang"] == x, "group"]
        for y in mlqa_small.languages:
            if x == y:
                continue
            expected = int(x_groups.isin(groups_in[y]).sum())
            assert scored.get((x, y), 0) == expected, (x, y)
            assert (y in report["pairs"][x]) == (expected > 0), (x, y)
            skipped_some |= expected < len(x_groups)
    assert skipped_some  # MLQA-R groups cover 2 to 4 languages, so skipping must happen
    # every scored pair enters the cross mean once
    cross_pairs = [v for x, row_ in report["pairs"].items() for y, v in row_.items() if y != x]
    assert report["map"]["cross"] == pytest.approx(np.mean(cross_pairs))


@REAL_DATA
@pytest.mark.parametrize("which", ["xquad", "mlqa"])
def test_perfect_embeddings_score_one_everywhere(which, xquad_small, mlqa_small):
    bench = {"xquad": xquad_small, "mlqa": mlqa_small}[which]
    groups = sorted(set(bench.queries["group"]))
    dim = {g: i for i, g in enumerate(groups)}
    q = np.zeros((len(bench.queries), len(groups) + 1), dtype=np.float32)
    q[np.arange(len(q)), [dim[g] for g in bench.queries["group"]]] = 1.0
    c = np.zeros((len(bench.candidates), len(groups) + 1), dtype=np.float32)
    c[:, -1] = 1.0  # non-gold sentences: orthogonal to every query
    position = {cid: i for i, cid in enumerate(bench.candidates["id"])}
    for qid, group in zip(bench.queries["id"], bench.queries["group"]):
        for cid in bench.relevant[qid]:
            c[position[cid], -1] = 0.0
            c[position[cid], dim[group]] = 1.0  # a sentence gold for two groups scores high for both
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    report = evaluate_embeddings(bench, q, c).report
    for metric in ("map", "map@20", "recall@10"):
        assert report[metric] == {"mono": pytest.approx(1.0), "cross": pytest.approx(1.0), "multi": pytest.approx(1.0)}
    # all golds fill the top |R| pooled ranks: distance |R| - 1, averaged per language then over languages
    per_lang = defaultdict(list)
    for qid, lang in zip(bench.queries["id"], bench.queries["lang"]):
        per_lang[lang].append(len(bench.relevant[qid]) - 1)
    assert report["rank_distance"] == pytest.approx(np.mean([np.mean(v) for v in per_lang.values()]))
    frame = per_query_scores(bench, q, c, setting="multi")
    assert (frame["rank_distance"] == frame["num_relevant"] - 1).all()
    # recall@1 in the pooled setting is 1/|R|: only one gold can be first
    assert (frame["recall@1"] == 1 / frame["num_relevant"]).all()


@REAL_DATA
@pytest.mark.slow
def test_full_xquad_with_random_embeddings_scores_at_chance(xquad):
    """The whole benchmark in every setting (its time is measured in bench/speed.py, not here)."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((len(xquad.queries), 384)).astype(np.float32)
    c = rng.standard_normal((len(xquad.candidates), 384)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    report = evaluate_embeddings(xquad, q, c).report
    assert report["num_queries"] == 13090 and len(report["pairs"]) == 11
    assert all(len(row_) == 11 for row_ in report["pairs"].values())
    # random embeddings: multi mAP near the chance level of 11 golds among 13014 sentences, and a
    # language-blind top 10 (1/11 of it in the query's language)
    assert report["map"]["multi"] < 0.01
    assert abs(report["top10_same_language"] - 1 / 11) < 0.02
