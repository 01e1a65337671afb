"""Analysis stage: reading a sweep's records back (``results``: tables, intervals, paired tests, bias views),
what a sweep can resolve and the alpha curve (``alpha``), the figures (``plots``) and the interactive explorer
(``explore``). The notebooks call ``analysis.<name>`` for any function of ``results`` and ``alpha``."""

from .._moved import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "hybridlib.paths": ("find_project_root",),
    "hybridlib.evaluation.stats": ("holm",),
    "tasks": ("report_scores", "report_per_language", "task_scores", "sweep_tasks", "task_overview", "ordering_agreement"),
}, fallback=("results", "alpha"))
