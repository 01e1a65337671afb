"""Top-k search over a pooled candidate set (FAISS exact inner product) and what the top k holds."""

from __future__ import annotations

import faiss
import numpy as np


def top_k(query_embeddings: np.ndarray, candidate_embeddings: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Scores and candidate rows of the ``k`` best candidates per query (exact; ties by lower row first)."""
    candidates = np.ascontiguousarray(candidate_embeddings, dtype=np.float32)
    index = faiss.IndexFlatIP(candidates.shape[1])
    index.add(candidates)
    scores, rows = index.search(np.ascontiguousarray(query_embeddings, dtype=np.float32), min(k, len(candidates)))
    return scores, rows


def same_language_share(benchmark, query_embeddings: np.ndarray, candidate_embeddings: np.ndarray,
                        k: int = 10) -> np.ndarray:
    """Per query: the share of its pooled top-k candidates written in the query's own language.

    With a language-neutral encoder and a balanced pool of L languages this tends to 1/L; a value
    near 1 means the encoder prefers its own language whatever the content (language bias).
    """
    _, rows = top_k(query_embeddings, candidate_embeddings, k)
    candidate_lang = np.asarray(benchmark.candidates["lang"], dtype=object)
    query_lang = np.asarray(benchmark.queries["lang"], dtype=object)
    return (candidate_lang[rows] == query_lang[:, None]).mean(axis=1)
