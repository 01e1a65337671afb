"""Candidate ids of the LAReQA benchmarks, ``"lang:article:paragraph:sentence"``: made and read only here."""

from __future__ import annotations


def candidate_id(lang: str, article, paragraph, sentence) -> str:
    """The id of a candidate sentence: ``"lang:article:paragraph:sentence"``."""
    return f"{lang}:{article}:{paragraph}:{sentence}"


def paragraph_of(candidate_id: str) -> str:
    """``"lang:article:paragraph"`` of a candidate id ``"lang:article:paragraph:sentence"`` (its last part dropped)."""
    return candidate_id.rsplit(":", 1)[0]


def is_candidate_id(text: str) -> bool:
    """Whether ``text`` has the four parts of a LAReQA candidate id."""
    return text.count(":") == 3
