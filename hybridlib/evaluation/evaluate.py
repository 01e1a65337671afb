"""The evaluate step of a run: encode a benchmark once, score it in every setting, measure its language bias."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ..data.benchmarks import Benchmark
from ..models.bi_encoder import BiEncoder
from .bias import evaluate_bias, lda_projection
from .metrics import build_eval_index, evaluate_embeddings


def evaluate_model(model: BiEncoder, benchmark: Benchmark, batch_size: int = 64, progress: bool = True,
                   backend: str = "eager", dtype: str = "fp32") -> dict:
    """Encode a benchmark once, score it in every setting (``metrics.evaluate_embeddings``) and measure its
    language bias (``bias.evaluate_bias``: the language-identity probe and the per-language centring).

    Returns ``{"metrics": the report (with "language_probe" and "centred"), "per_query": DataFrame (with the
    centred columns), "projection": PCA DataFrame, "projection_lda": LDA DataFrame or None,
    "timings": {"encode_seconds", "score_seconds", "bias_seconds"}}``.
    """
    start = time.perf_counter()
    encode = dict(batch_size=batch_size, show_progress=progress, backend=backend, dtype=dtype)  # see BiEncoder.encode
    queries = model.encode(benchmark.queries["text"], "query", **encode)
    candidates = model.encode(benchmark.candidates["text"], "passage", **encode)
    encoded = time.perf_counter()
    index = build_eval_index(benchmark)
    report, per_query = evaluate_embeddings(benchmark, queries, candidates, index=index)
    scored = time.perf_counter()
    bias, per_query = evaluate_bias(benchmark, queries, candidates, report, per_query, index=index)
    report.update(bias)
    projection_lda = lda_projection(benchmark, candidates)
    return {"metrics": report, "per_query": per_query, "projection": pca_projection(benchmark, candidates),
            "projection_lda": projection_lda,
            "timings": {"encode_seconds": encoded - start, "score_seconds": scored - encoded,
                        "bias_seconds": time.perf_counter() - scored}}


def pca_projection(benchmark: Benchmark, embeddings: np.ndarray, dims: int = 2) -> pd.DataFrame:
    """Candidate embeddings projected on their first principal components (for language-cluster plots)."""
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ components[:dims].T
    frame = pd.DataFrame(coords, columns=[f"pc{i + 1}" for i in range(dims)])
    frame.insert(0, "lang", benchmark.candidates["lang"])
    frame.insert(0, "candidate_id", benchmark.candidates["id"])
    return frame
