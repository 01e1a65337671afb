"""Evaluation stage: the LAReQA metrics (mono / cross / multi mAP, rank distance, same-language share), FAISS
search, the language-bias measures, the statistics (bootstrap intervals, paired tests, power), and the evaluate
step of a run."""

from .._moved import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "metrics": ("evaluate_embeddings", "build_eval_index"),
    "evaluate": ("evaluate_model",),
    "stats": ("bootstrap_ci", "paired_test", "holm", "wilson_interval"),
})
