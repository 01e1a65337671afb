"""Tatoeba bitext retrieval as XTREME and XTREME-R compute it: top-1 cosine nearest-neighbour accuracy.

Per language, every English line is a query against all the lines of the other side (en->xx, XTREME's direction:
its FAISS index holds the xx side and is searched with the English one; the gold of line i is line i); the headline
is the plain mean over languages. xx->en is reported beside it. Both sides are encoded alike, as passages: they are
sentences, like LAReQA's candidates, which cross-lingual batches align. Accuracy is a fraction (XTREME prints %).

The per-query table has one row per line and direction (setting ``en_xx`` or ``xx_en``), ``accuracy`` 0 or 1, and the
sentence pair as the resampling unit (``group`` = ``cluster`` = "<lang>:<line>"), so the statistics treat it like
any task's.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ...data.pinned import TATOEBA
from ...data.tatoeba import load_tatoeba
from ..search import top_k
from .base import Task, TaskData, check_per_query

DIRECTIONS = ("en_xx", "xx_en")  # en_xx: XTREME's


class TatoebaTask(Task):
    name = "tatoeba"
    interval_metrics = (("accuracy", "en_xx"), ("accuracy", "xx_en"))
    headline = ("accuracy", "en_xx")

    def languages(self, params: dict) -> list[str]:
        wanted = params["eval_languages"]  # English is every pair's other side, never a language of its own here
        return sorted(TATOEBA) if wanted is None else [lang for lang in sorted(TATOEBA) if lang in wanted]

    def load(self, params: dict) -> TaskData:
        languages = self.languages(params)
        pairs = load_tatoeba(languages, params["tatoeba_max_pairs"])
        ids = pairs["lang"] + ":" + pairs["index"].astype(str)
        queries = pd.DataFrame({"id": "en:" + ids, "lang": "en", "text": pairs["en"]})
        candidates = pd.DataFrame({"id": ids, "lang": pairs["lang"], "text": pairs["xx"]})
        return TaskData(self.name, languages, queries, candidates,
                        relevant=dict(zip(queries["id"], ({c} for c in candidates["id"]))), extra={"pairs": pairs})

    def evaluate(self, model, data: TaskData, params: dict, progress: bool = True) -> dict:
        start = time.perf_counter()
        encode = dict(batch_size=params["eval_batch_size"], show_progress=progress, backend=params["encode_backend"],
                      dtype=params["encode_dtype"])
        pairs = data.extra["pairs"]
        english = model.encode(pairs["en"], "passage", **encode)
        other = model.encode(pairs["xx"], "passage", **encode)
        encoded = time.perf_counter()
        table = tatoeba_per_query(pairs, english, other)
        report = summarize(table, params["tatoeba_max_pairs"])
        return {"metrics": report, "per_query": check_per_query(self, table),
                "timings": {"encode_seconds": encoded - start, "score_seconds": time.perf_counter() - encoded}}


def tatoeba_per_query(pairs: pd.DataFrame, english: np.ndarray, other: np.ndarray) -> pd.DataFrame:
    """One row per line and direction: the nearest line of the other side (``predicted``) and ``accuracy`` (0/1).

    ``english`` and ``other``: L2-normalised embeddings of ``pairs["en"]`` and ``pairs["xx"]`` (rows aligned)."""
    frames = []
    for lang, rows in pairs.groupby("lang", sort=True).indices.items():
        gold = np.arange(len(rows))
        for direction, queries, index in (("en_xx", english[rows], other[rows]), ("xx_en", other[rows], english[rows])):
            predicted = top_k(queries, index, k=1)[1][:, 0]
            unit = lang + ":" + pd.Series(gold).astype(str)
            frames.append(pd.DataFrame({
                "setting": direction, "lang": "en" if direction == "en_xx" else lang,
                "corpus_lang": lang if direction == "en_xx" else "en", "group": unit, "cluster": unit,
                "line": gold, "predicted": predicted, "accuracy": (predicted == gold).astype(float)}))
    return pd.concat(frames, ignore_index=True)


def summarize(table: pd.DataFrame, max_pairs: int | None) -> dict:
    """The task's block in metrics.json: accuracy per direction (mean over languages) and per language."""
    table = table.assign(xx=np.where(table["setting"] == "en_xx", table["corpus_lang"], table["lang"]))
    by_lang = table.groupby(["xx", "setting"])["accuracy"].mean().unstack("setting")
    pairs = table[table["setting"] == "en_xx"].groupby("xx").size()
    return {
        "task": "tatoeba",
        "languages": sorted(by_lang.index),
        "max_pairs": max_pairs,
        "accuracy": {d: float(by_lang[d].mean()) for d in DIRECTIONS},  # plain mean over languages, as XTREME
        "per_language": {lang: {"accuracy": {d: float(by_lang.loc[lang, d]) for d in DIRECTIONS},
                                "pairs": int(pairs[lang])} for lang in by_lang.index},
    }
