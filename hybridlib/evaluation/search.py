"""Top-k search over a pooled candidate set (FAISS exact inner product)."""

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

