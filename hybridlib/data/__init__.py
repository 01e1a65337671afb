"""Data stage: the evaluation benchmarks (pinned, sha256-checked), training pair tables and streamed sources,
the hybrid batch sampler, and the token ids of a pair table (tokenized once)."""

from .._moved import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "benchmarks": ("Benchmark", "load_benchmark", "pairs_from_benchmark", "load_pairs", "overlap_report",
                   "PAIR_COLUMNS", "NEGATIVE_COLUMNS"),
    "pinned": ("BENCHMARKS", "benchmark_languages"),
    "ids": ("candidate_id", "paragraph_of"),
    "sampler": ("HybridBatchSampler", "MultiSourceSampler", "Batch", "validate_ratios"),
    "tokens": ("PairTokens",),
}, fallback=("benchmarks",))
