"""Tatoeba bitext retrieval (XTREME / XTREME-R): line i of ``tatoeba.<xxx>-eng.<xxx>`` and of ``tatoeba.<xxx>-eng.eng``
are translations of each other.

Files come from LASER's pinned commit (sha256-checked, ``benchmarks.pinned_file``) or a local folder holding
``tatoeba/tatoeba.<xxx>-eng.<side>`` (``HYBRIDLIB_DATA_DIR``). Language codes are ISO 639-1 as XTREME maps LASER's
3-letter ones (``pinned.TATOEBA``: pes -> fa, swh -> sw, cmn -> zh, tgl -> tl).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .benchmarks import pinned_file
from .pinned import TATOEBA, TATOEBA_COMMIT

_RAW = "https://raw.githubusercontent.com/facebookresearch/LASER/{commit}/data/tatoeba/v1/{name}"


def tatoeba_file(lang: str, side: str, data_dir: str | Path | None = None) -> Path:
    """The verified file of one side (``"xx"``: the language's own, ``"en"``: its English) of a language."""
    code, _, sha_xx, sha_en = _spec(lang)
    name = f"tatoeba.{code}-eng.{code if side == 'xx' else 'eng'}"
    return pinned_file(f"tatoeba/{name}", _RAW.format(commit=TATOEBA_COMMIT, name=name),
                       sha_xx if side == "xx" else sha_en, data_dir)


def load_tatoeba(languages: list[str] | None = None, max_pairs: int | None = None,
                 data_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per sentence pair: ``lang``, ``index`` (the line, from 0), ``en``, ``xx``.

    ``languages``: ISO codes (None: all 41); ``max_pairs``: the first N pairs of each language (deterministic, for
    CPU budgets; the languages with fewer keep all theirs)."""
    languages = sorted(TATOEBA) if languages is None else list(languages)
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs={max_pairs}: must be a positive number of pairs per language, or None for all")
    frames = []
    for lang in languages:
        xx, en = (_lines(tatoeba_file(lang, side, data_dir)) for side in ("xx", "en"))
        if len(xx) != len(en) or len(xx) != TATOEBA[lang][1]:
            raise ValueError(f"Tatoeba {lang}: {len(xx)} and {len(en)} lines, expected {TATOEBA[lang][1]} on each side")
        n = len(xx) if max_pairs is None else min(max_pairs, len(xx))
        frames.append(pd.DataFrame({"lang": lang, "index": range(n), "en": en[:n], "xx": xx[:n]}))
    return pd.concat(frames, ignore_index=True)


def _lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines: a sentence may hold U+2028 and the like
    return lines[:-1] if lines[-1] == "" else lines


def _spec(lang: str) -> tuple:
    if lang not in TATOEBA:
        raise ValueError(f"Tatoeba has no language {lang!r}; it has {sorted(TATOEBA)}")
    return TATOEBA[lang]
