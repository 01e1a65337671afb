"""MIRACL dev: the hub-layout reader (tests/fixtures/miracl), trec_eval-semantics metrics against pytrec_eval and
ranx, and MiraclTask end to end with the tiny model, its embedding cache and its offline error. All offline."""

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest

from hybridlib.data import miracl as miracl_data
from hybridlib.data.miracl import MiraclUnavailable, corpus_files, load_miracl
from hybridlib.evaluation.tasks import base, get_task
from hybridlib.evaluation.tasks import miracl as task_module
from hybridlib.evaluation.tasks.miracl import MiraclTask, trec_per_query

FIXTURE = Path(__file__).parent / "fixtures" / "miracl"
SW_ORDER = ["1#0", "1#1", "20#0", "2#0", "3#0", "4#0", "5#0", "6#0", "7#0", "8#0", "9#0", "21#0", "22#0"]
PARAMS = {"miracl_languages": ["sw", "ko"], "miracl_max_passages": None, "eval_batch_size": 4,
          "encode_backend": "eager", "encode_dtype": "fp32"}


@pytest.fixture(autouse=True)
def _offline_fixture(monkeypatch, tmp_path):
    """Every test: the fixture as the MIRACL copy, a private cache, and the hub switched off."""
    monkeypatch.setenv("HYBRIDLIB_MIRACL_DIR", str(FIXTURE))
    monkeypatch.setenv("HYBRIDLIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny():
    from hybridlib.models.bi_encoder import tiny_model

    return tiny_model(seed=0, query_max_length=24, passage_max_length=32)


# --- reading --------------------------------------------------------------------------------------------

def test_fixture_loads_with_counts_duplicates_and_non_ascii():
    sw = load_miracl("sw", progress=False)
    assert sw.corpus_ids == SW_ORDER and sw.passages == 13 and sw.duplicates_removed == 0 and not sw.reduced
    assert list(sw.topics) == ["0", "1", "2", "3", "4"] and sw.topics["3"] == "Simba anaitwa «mfalme» wa nini?"
    assert sw.qrels["0"] == {"1#0": 1, "1#1": 0, "7#0": 0}  # rel-0 rows kept
    assert all(rel == 0 for rel in sw.qrels["4"].values())  # the topic with no positive
    texts = dict(zip(sw.corpus_ids, sw.corpus_texts))
    assert texts["8#0"] == "Simba Simba ni mnyama mkubwa wa jamii ya paka — «mfalme wa pori»."  # "title text"
    assert texts["5#0"] == "Chai ya tangawizi hupikwa kwa maziwa na sukari."  # no title: the text alone
    ko = load_miracl("ko", progress=False)
    assert ko.passages == 6 and ko.duplicates_removed == 1 and ko.missing_judged == 1  # "99#0" is judged only
    assert dict(zip(ko.corpus_ids, ko.corpus_texts))["11#0"] == "한글 한글은 세종대왕이 창제한 문자이다."  # first kept
    assert ko.topics["102"] == "한국에서 가장 큰 섬은?"


def test_reduced_corpus_is_judged_plus_first_n():
    first3 = load_miracl("sw", max_passages=3, progress=False)
    judged = {d for docs in first3.qrels.values() for d in docs}
    assert first3.reduced and first3.max_passages == 3
    assert first3.corpus_ids == [d for d in SW_ORDER if d in judged or d in SW_ORDER[:3]]
    assert "20#0" in first3.corpus_ids and "21#0" not in first3.corpus_ids  # unjudged: before and after the cut
    only_judged = load_miracl("sw", max_passages=0, progress=False)
    assert only_judged.corpus_ids == [d for d in SW_ORDER if d in judged]
    assert load_miracl("sw", max_passages=100, progress=False).corpus_ids == SW_ORDER


def test_second_load_reads_the_cache(monkeypatch):
    first = load_miracl("ko", progress=False)
    import datasets

    def no_stream(*args, **kwargs):
        raise AssertionError("streamed again")

    monkeypatch.setattr(datasets, "load_dataset", no_stream)
    again = load_miracl("ko", progress=False)
    assert again.corpus_ids == first.corpus_ids and again.qrels == first.qrels
    assert again.duplicates_removed == 1 and again.corpus_path == first.corpus_path


def test_shards_in_numeric_order(tmp_path):
    folder = tmp_path / "copy" / "miracl-corpus" / "miracl-corpus-v1.0-sw"
    folder.mkdir(parents=True)
    (tmp_path / "copy" / "miracl").mkdir()
    for n in (10, 2, 0, 1):
        (folder / f"docs-{n}.jsonl.gz").write_bytes(b"")
    assert [Path(p).name for p in corpus_files("sw", tmp_path / "copy")] == [
        "docs-0.jsonl.gz", "docs-1.jsonl.gz", "docs-2.jsonl.gz", "docs-10.jsonl.gz"]


def test_not_a_copy(tmp_path):
    with pytest.raises(MiraclUnavailable, match="miracl-corpus/"):
        load_miracl("sw", base_dir=tmp_path)


def test_offline_message_names_the_dataset_and_the_local_copy(monkeypatch):
    monkeypatch.delenv("HYBRIDLIB_MIRACL_DIR")
    start = time.monotonic()
    with pytest.raises(MiraclUnavailable) as err:
        load_miracl("sw", progress=False)
    assert time.monotonic() - start < 20
    message = str(err.value)
    assert "miracl/miracl" in message and "could not be reached" in message and "HYBRIDLIB_MIRACL_DIR" in message
    assert "\n" not in message
    with pytest.raises(MiraclUnavailable, match=r"miracl/miracl-corpus.*HYBRIDLIB_MIRACL_DIR"):
        corpus_files("sw")


def test_gated_and_refused_messages():
    import httpx
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    request = httpx.Request("GET", "https://huggingface.co/datasets/miracl/miracl")
    for err in (GatedRepoError("gated", response=httpx.Response(401, request=request)),
                HfHubHTTPError("forbidden", response=httpx.Response(403, request=request))):
        message = str(miracl_data._hub_error("miracl/miracl", err))
        assert "miracl/miracl" in message and "huggingface-cli login" in message and "HF_TOKEN" in message
    message = str(miracl_data._hub_error("miracl/miracl-corpus", ConnectionError("Name or service not known")))
    assert "miracl/miracl-corpus" in message and "HYBRIDLIB_MIRACL_DIR" in message


# --- metrics --------------------------------------------------------------------------------------------

def pytrec(qrels, run):
    """pytrec_eval's per-query scores with trec_eval's -c: a qrels topic absent from the run scores 0."""
    import pytrec_eval  # a dev dependency: trec_eval itself
    scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(
        {q: docs for q, docs in run.items() if docs})
    return {q: {"ndcg@10": scores.get(q, {}).get("ndcg_cut_10", 0.0),
                "recall@100": scores.get(q, {}).get("recall_100", 0.0)} for q in qrels}


def ranx_scores(qrels, run):
    """ranx's per-query scores on the run in trec_eval's order (score desc, docid desc) handed over as strictly
    decreasing scores (ranx has its own tie order), cut at 100; topics absent from the run get one unjudged doc."""
    from ranx import Qrels, Run, evaluate

    ordered = {}
    for q in qrels:
        ranked = sorted(run.get(q, {}).items(), key=lambda item: (item[1], item[0]), reverse=True)[:100]
        ordered[q] = {d: float(len(ranked) - i) for i, (d, _) in enumerate(ranked)} or {"<none>": 1.0}
    ranx_run = Run(ordered)
    evaluate(Qrels(qrels), ranx_run, ["ndcg@10", "recall@100"])
    return {q: {m: float(ranx_run.scores[m][q]) for m in ("ndcg@10", "recall@100")} for q in qrels}


def assert_same(ours, reference):
    assert set(ours) == set(reference)
    for q in ours:
        for metric in ("ndcg@10", "recall@100"):
            assert ours[q][metric] == pytest.approx(reference[q][metric], abs=1e-12), (q, metric)


def fixture_run(model, lang):
    """Every passage scored by the model's embeddings (the full score matrix)."""
    data = load_miracl(lang, progress=False)
    qids = list(data.qrels)
    queries = model.encode([data.topics[q] for q in qids], "query", show_progress=False)
    passages = model.encode(data.corpus_texts, "passage", show_progress=False)
    scores = queries @ passages.T
    return data.qrels, {q: dict(zip(data.corpus_ids, map(float, row))) for q, row in zip(qids, scores)}


HAND = {
    "qrels": {"a": {"d1": 1, "d2": 0, "d3": 2}, "b": {"x": 0, "y": 0}, "c": {"z": 1}, "d": {"p": 1, "q": 1},
              "e": {"r": 3, "s": 1}},
    "run": {"a": {"d1": 0.5, "d2": 0.5, "d3": 0.5, "d4": 0.5},  # all tied: trec_eval orders d4 d3 d2 d1
            "b": {"x": 1.0},  # no positive: 0 and 0
            "d": {"p": 0.9, "zz": 0.9, "q": 0.1},  # "zz" > "p": ranked first on the tie
            "e": {"s": 2.0, "r": 1.0, "n": 1.0}},  # "c" is absent: 0 and 0 (-c)
}


def test_metrics_by_hand_with_ties_and_missing_topics():
    ours = trec_per_query(HAND["qrels"], HAND["run"])
    log2 = np.log2
    assert ours["a"]["ndcg@10"] == pytest.approx((2 / log2(3) + 1 / log2(5)) / (2 + 1 / log2(3)))
    assert ours["a"]["recall@100"] == 1.0
    assert ours["b"] == {"ndcg@10": 0.0, "recall@100": 0.0}
    assert ours["c"] == {"ndcg@10": 0.0, "recall@100": 0.0}
    assert ours["d"]["ndcg@10"] == pytest.approx((1 / log2(3) + 1 / log2(4)) / (1 + 1 / log2(3)))
    assert ours["e"]["ndcg@10"] == pytest.approx((1 + 3 / log2(3)) / (3 + 1 / log2(3)))  # grades; r before n


def random_case(seed: int = 7):
    """60 topics with graded qrels, 150-odd scored docs each on few distinct scores (ties), some topics absent;
    cut to the top 100 in trec_eval's order (what ``trec_eval -M 100`` keeps, and what a top-100 search returns)."""
    rng = random.Random(seed)
    qrels, run = {}, {}
    for q in range(60):
        docs = [f"doc{rng.randrange(300)}" for _ in range(rng.randrange(1, 15))]
        qrels[f"q{q}"] = {d: rng.choice([0, 0, 1, 1, 2]) for d in docs}
        if q % 7:
            pool = docs + [f"doc{rng.randrange(300)}" for _ in range(150)]
            scored = {d: rng.randrange(12) / 4 for d in pool}
            run[f"q{q}"] = dict(sorted(scored.items(), key=lambda i: (i[1], i[0]), reverse=True)[:100])
    return qrels, run


@pytest.mark.parametrize("reference", ["pytrec_eval", pytest.param("ranx", marks=pytest.mark.slow)])
def test_metrics_match_the_references(tiny, reference):
    """On the fixture's qrels with the tiny model's scores, the hand-made runs and random runs with ties. ranx is
    slow here only for its one-off numba compilation (about 40 s)."""
    scores = pytrec if reference == "pytrec_eval" else ranx_scores
    for case in (fixture_run(tiny, "sw"), fixture_run(tiny, "ko"), (HAND["qrels"], HAND["run"]), random_case()):
        assert_same(trec_per_query(*case), scores(*case))


# --- the task ------------------------------------------------------------------------------------------

class OneHot:
    """A stand-in model whose passages are one-hot vectors and whose queries point at their relevant passages: the
    ideal retriever (what ``MiraclTask`` and the fingerprint read of a model, nothing more)."""

    def __init__(self, corpora):
        import torch

        self.ids = {d: i for i, d in enumerate(sorted({d for c in corpora.values() for d in c.corpus_ids}))}
        self.by_text = {}
        for corpus in corpora.values():
            self.by_text.update({("passage", t): {d: 1} for d, t in zip(corpus.corpus_ids, corpus.corpus_texts)})
            self.by_text.update({("query", corpus.topics[q]): {d: r for d, r in docs.items() if r > 0}
                                 for q, docs in corpus.qrels.items()})
        self.dim = len(self.ids) + 1
        self.encoder, self.tokenizer = torch.nn.Linear(1, 1), [None]
        self.pooling, self.passage_prefix = "mean", ""

    def max_length(self, role):
        return 8

    def encode(self, texts, role, **kwargs):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, -1] = 1e-3  # queries with no positive still have a direction
        for row, text in enumerate(texts):
            for docid, rel in self.by_text[(role, text)].items():
                out[row, self.ids[docid]] = rel
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_identity_embeddings_score_perfectly(monkeypatch):
    monkeypatch.setattr(task_module, "CHUNK", 4)  # several chunks: the running top-k merge is used
    task = MiraclTask()
    data = task.load(PARAMS)
    result = task.evaluate(OneHot(data.extra["corpora"]), data, PARAMS, progress=False)
    table = result["per_query"]
    positive = table["query_id"] != "sw:4"
    assert (table.loc[positive, ["ndcg@10", "recall@100"]] == 1.0).all().all()
    assert (table.loc[~positive, ["ndcg@10", "recall@100"]] == 0.0).all().all()  # no positive: 0, as trec_eval
    assert result["metrics"]["per_language"]["sw"]["ndcg@10"]["mono"] == pytest.approx(0.8)
    assert result["metrics"]["per_language"]["ko"]["recall@100"]["mono"] == 1.0


def test_task_end_to_end_with_the_tiny_model(tiny):
    task = get_task("miracl")
    assert (task.name, task.headline) == ("miracl", ("ndcg@10", "mono"))
    from hybridlib.parameters import TASK_PARAMETERS

    assert TASK_PARAMETERS["miracl"] == ("miracl_languages", "miracl_max_passages")
    data = task.load(PARAMS)
    assert data.languages == ["sw", "ko"] and len(data.queries) == 8
    assert data.relevant["sw:4"] == set() and data.relevant["ko:100"] == {"10#0", "10#1"}
    result = task.evaluate(tiny, data, PARAMS, progress=False)
    report, table = result["metrics"], result["per_query"]
    json.dumps(report)  # JSON-serialisable: the task's block in metrics.json
    assert set(report) >= {"task", "languages", "ndcg@10", "recall@100", "per_language", "corpus",
                           "comparable_with_paper", "revision"}
    assert report["task"] == "miracl" and report["languages"] == ["sw", "ko"]
    assert report["corpus"] == "full" and report["comparable_with_paper"] is False  # 2 of the paper's 15
    assert report["per_language"]["ko"] | {"ndcg@10": None, "recall@100": None} == {
        "ndcg@10": None, "recall@100": None, "queries": 3, "passages": 6, "duplicates_removed": 1, "missing_judged": 1}
    means = {lang: report["per_language"][lang]["ndcg@10"]["mono"] for lang in ("sw", "ko")}
    assert report["ndcg@10"]["mono"] == pytest.approx((means["sw"] + means["ko"]) / 2)
    assert set(result["timings"]) == {"encode_seconds", "search_seconds"}
    base.check_per_query(task, table)
    assert len(table) == 8 and set(table["setting"]) == {"mono"} and (table["lang"] == table["corpus_lang"]).all()
    assert (table["group"] == table["query_id"]).all() and table["query_id"].iloc[0] == "sw:0"
    for lang in ("sw", "ko"):  # the whole fixture corpus is within the top 100: the exact run's scores
        qrels, run = fixture_run(tiny, lang)
        rows = table[table["lang"] == lang].set_index("query_id")
        for qid, scores in trec_per_query(qrels, run).items():
            assert rows.loc[f"{lang}:{qid}", "ndcg@10"] == pytest.approx(scores["ndcg@10"], abs=1e-6)
            assert rows.loc[f"{lang}:{qid}", "recall@100"] == scores["recall@100"]


def test_reduced_corpus_report():
    params = {**PARAMS, "miracl_languages": ["sw"], "miracl_max_passages": 3}
    task = MiraclTask()
    data = task.load(params)
    report = task.evaluate(OneHot(data.extra["corpora"]), data, params, progress=False)["metrics"]
    assert report["corpus"] == "reduced: judged + first 3 (not comparable with the paper)"
    assert report["comparable_with_paper"] is False and report["per_language"]["sw"]["passages"] == 11


def test_second_evaluation_reads_the_embedding_cache(tiny, monkeypatch, tmp_path):
    monkeypatch.setattr(task_module, "CHUNK", 4)
    task = MiraclTask()
    data = task.load(PARAMS)
    calls = []
    original = tiny.encode

    def counting(texts, role, **kwargs):
        calls.append((role, len(texts)))
        return original(texts, role, **kwargs)

    monkeypatch.setattr(tiny, "encode", counting)
    first = task.evaluate(tiny, data, PARAMS, progress=False)
    assert sum(n for role, n in calls if role == "passage") == 13 + 6
    calls.clear()
    second = task.evaluate(tiny, data, PARAMS, progress=False)
    assert [role for role, _ in calls] == ["query", "query"]  # no passage encoded
    assert second["metrics"] == first["metrics"]
    chunks = sorted((tmp_path / "cache" / "miracl-embeddings").rglob("*.npy"))
    assert len(chunks) == 4 + 2  # sw: 13 passages in chunks of 4; ko: 6
    [second_sw] = [c for c in chunks if c.parent.name.startswith("sw-") and c.name == f"{4:010d}.npy"]
    second_sw.unlink()  # an interrupted run: it resumes with the missing chunk only
    calls.clear()
    assert task.evaluate(tiny, data, PARAMS, progress=False)["metrics"] == first["metrics"]
    assert [(role, n) for role, n in calls if role == "passage"] == [("passage", 4)]


def test_chunked_search_equals_one_index(tiny, monkeypatch):
    data = load_miracl("sw", progress=False)
    queries = tiny.encode([data.topics[q] for q in data.qrels], "query", show_progress=False)
    encode = dict(batch_size=4, show_progress=False, backend="eager", dtype="fp32")
    whole = task_module.search_corpus(tiny, data, queries, "whole", encode, {"encode_seconds": 0, "search_seconds": 0})
    monkeypatch.setattr(task_module, "CHUNK", 3)
    chunked = task_module.search_corpus(tiny, data, queries, "chunks", encode, {"encode_seconds": 0,
                                                                                 "search_seconds": 0})
    np.testing.assert_array_equal(whole[1], chunked[1])
    np.testing.assert_allclose(whole[0], chunked[0], rtol=0, atol=1e-6)
