"""XQuAD-R and MLQA-R as tasks: the LAReQA construction and metrics (``metrics``, ``evaluate.evaluate_model``)."""

from __future__ import annotations

from ...data.benchmarks import Benchmark, load_benchmark
from ...data.pinned import benchmark_languages
from ..metrics import INTERVAL_METRICS
from .base import Task, check_per_query


class LareqaTask(Task):
    """A LAReQA benchmark: every query against the candidate sentences of every language (mono, cross, multi)."""

    interval_metrics = tuple(INTERVAL_METRICS)
    headline = ("map", "multi")

    def __init__(self, name: str):
        self.name = name

    def languages(self, params: dict) -> list[str]:
        available = benchmark_languages(self.name)
        wanted = params["eval_languages"]
        return available if wanted is None else [lang for lang in available if lang in wanted]

    def load(self, params: dict) -> Benchmark:
        # None (every language) stays None: the same call, so the same benchmark, as before tasks existed
        languages = None if params["eval_languages"] is None else self.languages(params)
        return load_benchmark(self.name, languages=languages, max_groups=params["max_groups"])

    def evaluate(self, model, data: Benchmark, params: dict, progress: bool = True) -> dict:
        from ..evaluate import evaluate_model

        result = evaluate_model(model, data, params["eval_batch_size"], progress, params["encode_backend"],
                                params["encode_dtype"])
        check_per_query(self, result["per_query"])
        tables = {"projection": result["projection"], "projection-lda": result["projection_lda"]}
        return {"metrics": result["metrics"], "per_query": result["per_query"], "timings": result["timings"],
                "tables": {suffix: frame for suffix, frame in tables.items() if frame is not None}}
