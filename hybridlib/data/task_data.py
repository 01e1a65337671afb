"""What every evaluation task loads (``hybridlib.evaluation.tasks``): queries, candidates, relevance, languages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(repr=False)
class TaskData:
    """What a task evaluates on: ``queries`` and ``candidates`` (tables with at least ``id``, ``lang``, ``text``),
    ``relevant`` (query id -> set of relevant candidate ids), ``languages`` and any task-specific ``extra``."""

    name: str
    languages: list[str]
    queries: Any  # a datasets.Dataset or a DataFrame: id, lang, text, ...
    candidates: Any  # id, lang, text, ...
    relevant: dict[str, set[str]] = field(repr=False)
    extra: dict = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:  # sizes, not the tables: notebooks print it
        return (f"{type(self).__name__}({self.name!r}, languages={self.languages}, queries={len(self.queries)}, "
                f"candidates={len(self.candidates)})")
