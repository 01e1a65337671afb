"""MIRACL dev as a task: monolingual passage retrieval, nDCG@10 and Recall@100 with trec_eval semantics
(docs/architecture.md, "Where new things go").

Per language the corpus (``hybridlib.data.miracl``) is embedded as passages in chunks of ``CHUNK`` and each chunk
searched exactly (FAISS ``IndexFlatIP``) for the dev topics' top ``TOP_K``; the running top ``TOP_K`` merges the
chunks, so memory holds one chunk of texts and embeddings at a time. Chunk embeddings are cached in
``cache_dir("miracl-embeddings")`` under a fingerprint of the model (weights, pooling, passage prefix and length,
tokenizer, encode dtype) and of the corpus; each chunk file is written atomically, so an interrupted evaluation
resumes at the next chunk and a second evaluation of the same model encodes no passage.

Metrics (``trec_per_query``) as ``trec_eval -c -m ndcg_cut.10 -m recall.100`` computes them (checked against
pytrec_eval and ranx in tests/test_miracl.py): the run is sorted by score descending, ties by docid descending
(trec_eval's order); gains are the qrels grades, discount log2(rank + 1), ideal DCG from the qrels; Recall@100 is
relevant retrieved in the top 100 over all relevant (rel >= 1). Every qrels topic counts (``-c``): one absent from
the run, and one whose judgements are all rel 0, scores 0 on both. A language's score is the mean over its topics,
the headline the plain mean over languages.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ...cache import cache_dir
from ...data.miracl import MIRACL_CORPUS_REVISION, MIRACL_REVISION, PAPER_LANGUAGES, MiraclData, load_miracl
from ...records import atomic_path
from ..search import top_k
from .base import Task, TaskData, check_per_query

CHUNK = 50_000  # passages embedded (and their token ids held) at a time
TOP_K = 100
METRICS = ("ndcg@10", "recall@100")


class MiraclTask(Task):
    name = "miracl"
    interval_metrics = (("ndcg@10", "mono"), ("recall@100", "mono"))
    headline = ("ndcg@10", "mono")

    def languages(self, params: dict) -> list[str]:
        return list(params.get("miracl_languages") or PAPER_LANGUAGES)

    def load(self, params: dict) -> TaskData:
        corpora = {lang: load_miracl(lang, params.get("miracl_max_passages")) for lang in self.languages(params)}
        rows = [(f"{lang}:{qid}", lang, data.topics.get(qid)) for lang, data in corpora.items() for qid in data.qrels]
        missing = [qid for qid, _, text in rows if text is None]
        if missing:
            raise ValueError(f"MIRACL: qrels topics without a query text: {missing[:10]}")
        relevant = {f"{lang}:{qid}": {d for d, rel in docs.items() if rel > 0}
                    for lang, data in corpora.items() for qid, docs in data.qrels.items()}
        return TaskData(self.name, list(corpora), pd.DataFrame(rows, columns=["id", "lang", "text"]),
                        pd.DataFrame(columns=["id", "lang", "text"]),  # the corpora are in extra, read in chunks
                        relevant=relevant, extra={"corpora": corpora})

    def overlap(self, pairs, data: TaskData) -> dict | None:
        """Training texts among the dev topics; the corpora (millions of passages) are not searched for them."""
        report = super().overlap(pairs, data)  # data.candidates is empty: passages count as not measured
        return {**report, "passage_overlap": None}

    def evaluate(self, model, data: TaskData, params: dict, progress: bool = True) -> dict:
        encode = dict(batch_size=params["eval_batch_size"], show_progress=progress, backend=params["encode_backend"],
                      dtype=params["encode_dtype"])
        fingerprint = model_fingerprint(model, params["encode_dtype"])
        frames, languages, timings = [], {}, {"encode_seconds": 0.0, "search_seconds": 0.0}
        for lang in data.languages:
            corpus: MiraclData = data.extra["corpora"][lang]
            qids = list(corpus.qrels)
            start = time.perf_counter()
            queries = model.encode([corpus.topics[q] for q in qids], "query", **encode)
            timings["encode_seconds"] += time.perf_counter() - start
            scores, rows = search_corpus(model, corpus, queries, fingerprint, encode, timings)
            start = time.perf_counter()
            ids = corpus.corpus_ids
            run = {q: {ids[i]: float(x) for i, x in zip(r.tolist(), s.tolist())} for q, s, r in zip(qids, scores, rows)}
            per_query = trec_per_query(corpus.qrels, run)
            timings["search_seconds"] += time.perf_counter() - start
            unit = [f"{lang}:{q}" for q in qids]
            frames.append(pd.DataFrame({"setting": "mono", "lang": lang, "corpus_lang": lang, "group": unit,
                                        "cluster": unit, "query_id": unit,
                                        **{m: [per_query[q][m] for q in qids] for m in METRICS}}))
            languages[lang] = {**{m: {"mono": float(np.mean(frames[-1][m])) if qids else 0.0} for m in METRICS},
                               "queries": len(qids), "passages": corpus.passages,
                               "duplicates_removed": corpus.duplicates_removed,
                               "missing_judged": corpus.missing_judged}
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["setting", "lang", "corpus_lang", "group", "cluster", "query_id", *METRICS])
        reduced = params.get("miracl_max_passages")
        report = {
            "task": self.name,
            "languages": list(data.languages),
            **{m: {"mono": float(np.mean([v[m]["mono"] for v in languages.values()])) if languages else None}
               for m in METRICS},
            "per_language": languages,
            "corpus": ("full" if reduced is None
                       else f"reduced: judged + first {reduced} (not comparable with the paper)"),
            "max_passages": reduced,
            "comparable_with_paper": reduced is None and sorted(data.languages) == sorted(PAPER_LANGUAGES),
            "embedding_cache": str(cache_dir("miracl-embeddings", fingerprint[:24])),  # delete once scored, if space is short
            "revision": {"miracl": MIRACL_REVISION, "miracl-corpus": MIRACL_CORPUS_REVISION,
                         "source": sorted({c.source for c in data.extra["corpora"].values()})},
        }
        return {"metrics": report, "per_query": check_per_query(self, table), "timings": timings}


def search_corpus(model, corpus: MiraclData, queries: np.ndarray, fingerprint: str, encode: dict,
                  timings: dict) -> tuple[np.ndarray, np.ndarray]:
    """Scores and corpus rows of the top ``TOP_K`` passages per query, best first (ties: lower row first), chunk by
    chunk: each chunk's embeddings come from the cache or are encoded and cached."""
    folder = cache_dir("miracl-embeddings", fingerprint[:24], f"{corpus.key}-chunk{CHUNK}")
    best_scores = np.empty((len(queries), 0), dtype=np.float32)
    best_rows = np.empty((len(queries), 0), dtype=np.int64)
    for start, _ids, texts in corpus.iter_corpus(CHUNK):
        began = time.perf_counter()
        embeddings = _chunk_embeddings(model, folder / f"{start:010d}.npy", texts, encode)
        searched = time.perf_counter()
        timings["encode_seconds"] += searched - began
        if len(queries):
            scores, rows = top_k(queries, embeddings, k=TOP_K)
            merged_scores = np.concatenate([best_scores, scores], axis=1)  # earlier chunks first: lower rows first
            merged_rows = np.concatenate([best_rows, rows.astype(np.int64) + start], axis=1)
            order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :TOP_K]
            best_scores = np.take_along_axis(merged_scores, order, axis=1)
            best_rows = np.take_along_axis(merged_rows, order, axis=1)
        timings["search_seconds"] += time.perf_counter() - searched
    return best_scores, best_rows


def _chunk_embeddings(model, path: Path, texts: list[str], encode: dict) -> np.ndarray:
    """The passage embeddings of one chunk: read from ``path`` when complete, else encoded and written atomically."""
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (len(texts), model.dim) and cached.dtype == np.float32:
                return cached
        except (OSError, ValueError):
            pass  # damaged: encoded again below
    embeddings = model.encode(texts, "passage", **encode)
    with atomic_path(path) as partial, open(partial, "wb") as handle:
        np.save(handle, embeddings)  # a handle: np.save would append ".npy" to the temporary name
    return embeddings


def model_fingerprint(model, dtype: str = "fp32") -> str:
    """sha256 of what decides a passage embedding: every state_dict tensor (name, dtype, shape, bytes), the pooling,
    passage prefix and length, the tokenizer's class and size, and the encode dtype."""
    import torch

    digest = hashlib.sha256()
    settings = (model.pooling, model.passage_prefix, model.max_length("passage"), type(model.tokenizer).__name__,
                len(model.tokenizer), dtype)
    digest.update(repr(settings).encode())
    for name, tensor in sorted(model.encoder.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def trec_per_query(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], ndcg_k: int = 10,
                   recall_k: int = 100) -> dict[str, dict[str, float]]:
    """``{qid: {"ndcg@10": x, "recall@100": y}}`` for every qrels topic, as ``trec_eval -c`` (module docstring)."""
    out = {}
    for qid, judged in qrels.items():
        ranked = sorted(run.get(qid, {}).items(), key=lambda item: (item[1], item[0]), reverse=True)
        gains = [max(judged.get(docid, 0), 0) for docid, _ in ranked]
        dcg = sum(g / np.log2(i + 2) for i, g in enumerate(gains[:ndcg_k]))
        ideal = sorted((max(rel, 0) for rel in judged.values()), reverse=True)[:ndcg_k]
        idcg = sum(g / np.log2(i + 2) for i, g in enumerate(ideal))
        relevant = sum(rel >= 1 for rel in judged.values())
        found = sum(g >= 1 for g in gains[:recall_k])
        out[qid] = {f"ndcg@{ndcg_k}": float(dcg / idcg) if idcg > 0 else 0.0,
                    f"recall@{recall_k}": found / relevant if relevant else 0.0}
    return out
