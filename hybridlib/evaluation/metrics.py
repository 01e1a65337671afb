"""LAReQA scoring of precomputed embeddings: mAP, mAP@20, Recall@k and rank distance per setting.

Settings (docs/architecture.md, "Settings and metrics"), for a query in language X:

- ``mono``:  corpus = the language-X candidates; relevant = its gold sentence(s) in X.
- ``cross``: corpus = the candidates of one other language Y (every ordered pair X != Y); relevant =
  its gold in Y. Queries whose group has no gold in Y (MLQA-R) are skipped for that pair, not scored 0.
- ``multi``: corpus = every candidate pooled; relevant = all golds of its group.

Per language (or ordered pair) a metric is the mean over its queries; ``mono`` and ``multi`` are then
the mean over query languages, ``cross`` the mean over the ordered pairs with at least one scored query.

Every metric follows from the rank of each relevant candidate, so the work is: score a block of
queries against all candidates once (float32 inner product, BLAS), then count the candidates that
score higher than each relevant one. Pooled ranks come from one sort of each score row plus a
vectorised binary search (cost independent of the number of relevant items); own-language ranks from
one comparison pass over that language's columns. AP has no cutoff, so exact full ranks are needed:
FAISS top-k search would not help and is not used.

Ties are broken by candidate index: among equal scores the candidate with the lower row index in
``benchmark.candidates`` ranks first. The numbers are therefore deterministic for given embeddings.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..data.ids import is_candidate_id, paragraph_of
from ..progress import progress_bar
from .search import top_k

SETTINGS = ("mono", "cross", "multi")
METRICS = ("map", "map@20", "recall@1", "recall@10")
MULTI_ONLY = ("rank_distance", "top10_same_language")  # defined in the pooled (multi) setting only
# The same scores after per-language mean-centring of the embeddings (``hybridlib.evaluation.bias``): metric name ->
# per-query column. ``map_centred`` has a value in every setting, the other two in the pooled rows only.
CENTRED = {"map_centred": "ap_centred", "rank_distance_centred": "rank_distance_centred",
           "top10_same_language_centred": "top10_same_language_centred"}
# report name -> the per-query column it is the mean of (AP of one query; "map" is its mean)
COLUMNS = {"map": "ap", "map@20": "ap@20", "recall@1": "recall@1", "recall@10": "recall@10",
           **{name: name for name in MULTI_ONLY}, **CENTRED}
# (metric, setting) pairs that get a bootstrap interval in the evaluation notebook (the LAReQA task's)
INTERVAL_METRICS = [("map", "mono"), ("map", "cross"), ("map", "multi"), ("map@20", "multi"),
                    ("recall@10", "multi"), ("rank_distance", "multi"), ("top10_same_language", "multi")]
MULTI_LABEL = "all"  # corpus_lang of pooled-setting rows
TOP_K = 10  # the pooled top k whose same-language share measures language bias
# pooled rows only: the ids of the query's pooled top TOP_K candidates, best first, space-separated; and the
# pooled rank of each of its relevant candidates as "lang:rank", space-separated, in candidate row order
TOP_IDS, GOLD_RANKS = "top_ids", "gold_ranks"

_MAX_BLOCK = 1 << 24  # score-matrix elements held at once (64 MB of float32)


def _column(dataset, name: str) -> list:
    """A column as a plain list (``datasets`` may hand back a lazy Column; slicing it is fast)."""
    values = dataset[name]
    return values if isinstance(values, list) else values[:]


@dataclass
class EvalIndex:
    """Integer view of a benchmark's structure, computed once and reused by every setting.

    ``relevant`` is padded with -1: row i holds the candidate row indices relevant to query i, sorted.
    """

    languages: list[str]
    query_ids: list[str]
    query_groups: list[str]
    query_clusters: list[str]  # the paragraph of each query's gold: questions on one paragraph are not independent
    query_lang: np.ndarray  # [n_queries] int, index into languages
    candidate_lang: np.ndarray  # [n_candidates] int, index into languages
    relevant: np.ndarray  # [n_queries, max_relevant] int64, -1 = padding

    @cached_property
    def relevant_mask(self) -> np.ndarray:
        return self.relevant >= 0

    @cached_property
    def relevant_lang(self) -> np.ndarray:
        """Language code of each relevant candidate, -1 for padding."""
        return np.where(self.relevant_mask, self.candidate_lang[np.maximum(self.relevant, 0)], -1)


def build_eval_index(benchmark) -> EvalIndex:
    """Precompute language codes and the padded relevant-candidate array of a benchmark."""
    languages = list(benchmark.languages)
    code = {lang: i for i, lang in enumerate(languages)}
    query_ids = _column(benchmark.queries, "id")
    query_langs = _column(benchmark.queries, "lang")
    candidate_ids = _column(benchmark.candidates, "id")
    candidate_langs = _column(benchmark.candidates, "lang")
    unknown = sorted((set(query_langs) | set(candidate_langs)) - set(code))
    if unknown:
        raise ValueError(f"languages {unknown} occur in the data but not in benchmark.languages {languages}")
    position = {cid: i for i, cid in enumerate(candidate_ids)}
    rel_lists = []
    for qid in query_ids:
        try:
            rel_lists.append(sorted(position[c] for c in benchmark.relevant.get(qid, ())))
        except KeyError as err:
            raise ValueError(f"query {qid!r} has relevant candidate {err.args[0]!r} missing from candidates") from None
    width = max((len(r) for r in rel_lists), default=0)
    relevant = np.full((len(query_ids), max(width, 1)), -1, dtype=np.int64)
    for i, rel in enumerate(rel_lists):
        relevant[i, : len(rel)] = rel
    return EvalIndex(
        languages=languages,
        query_ids=list(query_ids),
        query_groups=list(_column(benchmark.queries, "group")),
        query_clusters=[gold_paragraph([candidate_ids[j] for j in rel], group)
                        for rel, group in zip(rel_lists, _column(benchmark.queries, "group"))],
        query_lang=np.array([code[lang] for lang in query_langs], dtype=np.int64),
        candidate_lang=np.array([code[lang] for lang in candidate_langs], dtype=np.int64),
        relevant=relevant,
    )


def gold_paragraph(relevant_ids: list[str], group: str) -> str:
    """The cluster of a question: the paragraph ``lang:article:paragraph`` holding its gold sentence (English
    where it has one, whose file holds every MLQA-R id; else the first language). Questions asked on one
    paragraph share their candidate sentences, so their scores are correlated: the bootstrap resamples these
    clusters, not single questions. Ids not of the LAReQA form ``lang:a:p:s`` leave the group its own cluster."""
    ids = sorted(relevant_ids, key=lambda cid: (not cid.startswith("en:"), cid))
    return paragraph_of(ids[0]) if ids and is_candidate_id(ids[0]) else str(group)


@dataclass
class RelevantRanks:
    """1-based ranks of every relevant candidate (aligned with ``EvalIndex.relevant``; 0 = padding).

    ``in_language``: rank inside the corpus of the candidate's own language (used by mono and cross).
    ``pooled``: rank inside all candidates (used by multi).
    """

    in_language: np.ndarray
    pooled: np.ndarray


def _count_at_most(sorted_rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row i and value j: how many of ``sorted_rows[i]`` (ascending) are <= values[i, j].

    A branchless binary search over all (row, value) pairs at once (``np.searchsorted`` takes one row):
    grow the count by halving steps while the element it would include is still <= the value.
    """
    n, length = sorted_rows.shape
    flat = sorted_rows.ravel()
    base = (np.arange(n, dtype=np.int64) * length)[:, None]
    count = np.zeros(values.shape, dtype=np.int64)
    step = 1 << max(0, int(length).bit_length() - 1)
    while step:
        grown = count + step
        fits = grown <= length
        probe = flat[base + np.minimum(grown, length) - 1]
        count += step * (fits & (probe <= values))
        step >>= 1
    return count


def _language_columns(candidate_lang: np.ndarray, n_languages: int) -> list[tuple[object, np.ndarray]]:
    """(selector, candidate indices) per language; the selector is a slice when the block is contiguous."""
    blocks = []
    for y in range(n_languages):
        idx = np.flatnonzero(candidate_lang == y)
        contiguous = len(idx) > 0 and idx[-1] - idx[0] + 1 == len(idx)
        blocks.append((slice(int(idx[0]), int(idx[-1]) + 1) if contiguous else idx, idx))
    return blocks


def _check_embeddings(index: EvalIndex, queries: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    candidates = np.ascontiguousarray(candidates, dtype=np.float32)
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"need 2-d embeddings of equal width, got {queries.shape} and {candidates.shape}")
    if len(queries) != len(index.query_ids) or len(candidates) != len(index.candidate_lang):
        raise ValueError(
            f"{len(queries)} query / {len(candidates)} candidate embeddings for "
            f"{len(index.query_ids)} queries / {len(index.candidate_lang)} candidates"
        )
    if not (np.isfinite(queries).all() and np.isfinite(candidates).all()):
        raise ValueError("embeddings contain NaN or inf")
    return queries, candidates


def relevant_ranks(
    index: EvalIndex,
    query_embeddings: np.ndarray,
    candidate_embeddings: np.ndarray,
    progress: bool = False,
    threads: int = 2,
) -> RelevantRanks:
    """Rank of each relevant candidate in its own language's corpus and in the pooled corpus.

    rank = 1 + #(candidates scoring strictly higher) + #(equal-scoring candidates with a lower index).
    Queries are scored in blocks (one query language, at most ``_MAX_BLOCK`` scores); ``threads``
    blocks run at once (numpy's sort and comparisons are single-threaded but release the GIL).
    The result does not depend on ``threads``.
    """
    queries, candidates = _check_embeddings(index, query_embeddings, candidate_embeddings)
    blocks = _language_columns(index.candidate_lang, len(index.languages))
    index.relevant_mask, index.relevant_lang  # fill the cached arrays before threads share them
    in_language = np.zeros(index.relevant.shape, dtype=np.int64)
    pooled = np.zeros(index.relevant.shape, dtype=np.int64)
    chunk = max(1, _MAX_BLOCK // max(1, len(candidates)))
    work = []
    for x in range(len(index.languages)):
        rows_x = np.flatnonzero(index.query_lang == x)
        work += [rows_x[start : start + chunk] for start in range(0, len(rows_x), chunk)]

    def run(rows: np.ndarray) -> np.ndarray:
        pooled[rows], in_language[rows] = _rank_block(index, queries[rows] @ candidates.T, rows, blocks)
        return rows

    with progress_bar(total=len(queries), desc="scoring queries", unit="q", disable=not progress) as bar:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for rows in pool.map(run, work):
                bar.update(len(rows))
                bar.set_postfix(lang=index.languages[index.query_lang[rows[0]]])
    return RelevantRanks(in_language=in_language, pooled=pooled)


def _rank_block(index: EvalIndex, scores: np.ndarray, rows: np.ndarray, blocks) -> tuple[np.ndarray, np.ndarray]:
    """Pooled and own-language ranks of the relevant items of ``rows``, given their score rows.

    Pooled: one sort per score row, then a binary search per relevant item. Own language: one
    comparison pass over that language's columns. Exact ties (rare unless embeddings repeat) are
    detected from the sorted row and only then resolved by index.
    """
    rel, ok, lang = index.relevant[rows], index.relevant_mask[rows], index.relevant_lang[rows]
    n_candidates = scores.shape[1]
    values = np.take_along_axis(scores, np.maximum(rel, 0), axis=1)
    ordered = np.sort(scores, axis=1)
    at_most = _count_at_most(ordered, values)  # >= 1: includes the relevant item itself
    # another candidate with the very same score sits just below it in the sorted row
    below = np.take_along_axis(ordered, np.maximum(at_most - 2, 0), axis=1)
    tied = ok & (at_most >= 2) & (below == values)
    above = n_candidates - at_most
    if tied.any():
        above += _ties_before(scores, slice(None), np.arange(n_candidates), values, rel, tied)
    own_rank = np.zeros(rel.shape, dtype=np.int64)
    for y, (sel, idx) in enumerate(blocks):
        own = ok & (lang == y)
        for j in np.flatnonzero(own.any(axis=0)):  # usually one slot per language
            block_above = np.count_nonzero(scores[:, sel] > values[:, j, None], axis=1)
            own_rank[:, j] = np.where(own[:, j], block_above + 1, own_rank[:, j])
        if (tied & own).any():
            own_rank += _ties_before(scores, sel, idx, values, rel, tied & own)
    return np.where(ok, above + 1, 0), own_rank


def _ties_before(scores, sel, idx, values, rel, flagged) -> np.ndarray:
    """For the flagged (row, relevant) pairs: candidates in ``sel`` with an equal score and a lower index."""
    out = np.zeros(rel.shape, dtype=np.int64)
    ii, jj = np.nonzero(flagged)
    step = max(1, _MAX_BLOCK // max(1, len(idx)))
    for s in range(0, len(ii), step):
        i, j = ii[s : s + step], jj[s : s + step]
        equal = scores[i][:, sel] == values[i, j][:, None]
        out[i, j] = np.count_nonzero(equal & (idx[None, :] < rel[i, j][:, None]), axis=1)
    return out


def _rank_metrics(ranks: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """AP, AP@20 (divisor min(20, |R|)), Recall@1/@10 per row from the ranks of the relevant items.

    Rows must have at least one valid item. Ranks are distinct (ties were broken), so the j-th
    smallest rank r_j has exactly j relevant items at or above it: precision there is j / r_j.
    """
    r = np.sort(np.where(valid, ranks, np.inf).astype(np.float64), axis=1)
    n_rel = valid.sum(axis=1)
    precision = np.arange(1, r.shape[1] + 1) / r  # 0 where r is inf
    return {
        "ap": precision.sum(axis=1) / n_rel,
        "ap@20": np.where(r <= 20, precision, 0.0).sum(axis=1) / np.minimum(20, n_rel),
        "recall@1": (r <= 1).sum(axis=1) / n_rel,
        "recall@10": (r <= 10).sum(axis=1) / n_rel,
    }


def _setting_frame(index: EvalIndex, ranks: RelevantRanks, setting: str) -> pd.DataFrame:
    mask, rel_lang, qlang = index.relevant_mask, index.relevant_lang, index.query_lang
    ids, groups = np.asarray(index.query_ids, dtype=object), np.asarray(index.query_groups, dtype=object)
    clusters = np.asarray(index.query_clusters, dtype=object)
    langs = np.asarray(index.languages, dtype=object)
    parts = []
    if setting == "multi":
        targets = [(None, mask, ranks.pooled)]
    elif setting == "mono":
        targets = [(None, mask & (rel_lang == qlang[:, None]), ranks.in_language)]
    elif setting == "cross":
        targets = [(y, mask & (rel_lang == y) & (qlang[:, None] != y), ranks.in_language) for y in range(len(langs))]
    else:
        raise ValueError(f"unknown setting {setting!r}; choose from {SETTINGS}")
    for y, valid, rank in targets:
        rows = np.flatnonzero(valid.any(axis=1))  # no relevant item in this corpus: skipped, not 0
        v, rk = valid[rows], rank[rows]
        frame = {
            "setting": setting,
            "query_id": ids[rows],
            "group": groups[rows],
            "cluster": clusters[rows],
            "lang": langs[qlang[rows]],
            "corpus_lang": MULTI_LABEL if setting == "multi" else langs[qlang[rows] if y is None else y],
            "num_relevant": v.sum(axis=1),
            **_rank_metrics(rk, v),
        }
        if setting == "multi":
            frame.update(_pooled_rank_columns(rk, v, rel_lang[rows] == qlang[rows][:, None]))
        parts.append(pd.DataFrame(frame))
    return pd.concat(parts, ignore_index=True)


def _pooled_rank_columns(ranks: np.ndarray, valid: np.ndarray, same_lang: np.ndarray) -> dict[str, np.ndarray]:
    """Rank distance (last relevant minus first, NaN below 2 relevant) and same- vs other-language ranks."""
    r = np.where(valid, ranks, np.nan).astype(np.float64)
    n_rel = valid.sum(axis=1)
    first, last = np.nanmin(r, axis=1), np.nanmax(r, axis=1)
    same = np.where(same_lang, r, np.nan)
    other = np.where(same_lang, np.nan, r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN is the intended answer
        return {
            "rank_first": first,
            "rank_last": last,
            "rank_distance": np.where(n_rel >= 2, last - first, np.nan),
            "rank_same_lang": np.nanmin(same, axis=1),
            "rank_other_best": np.nanmin(other, axis=1),
            "rank_other_mean": np.nanmean(other, axis=1),
        }


def per_query_scores(
    benchmark,
    query_embeddings: np.ndarray,
    candidate_embeddings: np.ndarray,
    setting: str | list[str] | None = None,
    progress: bool = False,
    index: EvalIndex | None = None,
) -> pd.DataFrame:
    """One row per scored (query, corpus): the values every aggregate is a mean of.

    ``setting``: "mono", "cross", "multi", a list of them, or None for all three (ranks are computed
    once). Columns: setting, query_id, group, lang (query language), corpus_lang ("all" for multi),
    num_relevant, ap, ap@20, recall@1, recall@10; multi rows also carry rank_first, rank_last,
    rank_distance (NaN when fewer than 2 relevant), rank_same_lang (pooled rank of the gold in the
    query's language), rank_other_best and rank_other_mean (pooled ranks of the other-language golds).
    """
    settings = list(SETTINGS) if setting is None else [setting] if isinstance(setting, str) else list(setting)
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; choose from {SETTINGS}")
    index = index or build_eval_index(benchmark)
    ranks = relevant_ranks(index, query_embeddings, candidate_embeddings, progress=progress)
    return _frames(index, ranks, settings)


def _frames(index: EvalIndex, ranks: RelevantRanks, settings) -> pd.DataFrame:
    return pd.concat([_setting_frame(index, ranks, s) for s in settings], ignore_index=True)


def pooled_top_k(query_embeddings: np.ndarray, candidate_embeddings: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Candidate rows of each query's pooled top ``k``, best first (FAISS exact search, ``search.top_k``)."""
    return top_k(query_embeddings, candidate_embeddings, k)[1]


def same_language_share_of(index: EvalIndex, top_rows: np.ndarray) -> np.ndarray:
    """Per query: the share of its top rows (``pooled_top_k``) in the query's own language."""
    return (index.candidate_lang[top_rows] == index.query_lang[:, None]).mean(axis=1)


def pooled_query_order(index: EvalIndex, per_query: pd.DataFrame) -> tuple[pd.Series, np.ndarray]:
    """The pooled rows of a per-query table (a boolean mask) and, for each, its query's position in ``index``."""
    multi = per_query["setting"] == "multi"
    position = {query_id: i for i, query_id in enumerate(index.query_ids)}
    return multi, np.array([position[q] for q in per_query.loc[multi, "query_id"]], dtype=np.int64)


def _gold_rank_text(index: EvalIndex, ranks: RelevantRanks) -> list[str]:
    """Per query: "lang:rank" for each relevant candidate (candidate row order), its pooled rank."""
    langs = index.languages
    return [" ".join(f"{langs[index.candidate_lang[c]]}:{r}" for c, r in zip(rel, rank) if c >= 0)
            for rel, rank in zip(index.relevant, ranks.pooled)]


def _json_float(value) -> float | None:
    """A plain float, or None where there was nothing to average (NaN)."""
    return None if value is None or pd.isna(value) else float(value)


def summarize_scores(per_query: pd.DataFrame) -> dict:
    """Aggregate a ``per_query_scores`` table into the report of ``evaluate_embeddings`` (less the counts).

    Works on resampled tables too (duplicate rows weigh double), which is what bootstrap tests need.
    """
    columns = [COLUMNS[metric] for metric in METRICS]
    # one cell per (setting, query language, corpus language): the mean over its queries
    cells = per_query.groupby(["setting", "lang", "corpus_lang"])[columns].mean()
    # per query language: mono/multi have a single cell; cross averages that language's pairs
    by_lang = cells.groupby(level=["setting", "lang"]).mean()
    langs = sorted(per_query["lang"].unique())
    present = set(cells.index.get_level_values("setting"))

    def overall(setting: str, column: str) -> float | None:
        if setting not in present:
            return None
        # cross: mean over ordered pairs; mono and multi: mean over query languages
        return _json_float((cells if setting == "cross" else by_lang).loc[setting, column].mean())

    report: dict = {metric: {s: overall(s, COLUMNS[metric]) for s in SETTINGS} for metric in METRICS}
    multi = per_query[per_query["setting"] == "multi"]
    # pooled-only measures: mean per query language (NaN rows, e.g. < 2 relevant, ignored), then over languages
    pooled = {name: multi.groupby("lang")[name].mean() for name in MULTI_ONLY if name in multi}
    counts = multi.groupby("lang").size()
    report.update({name: _json_float(by_query_lang.mean()) for name, by_query_lang in pooled.items()})
    report["per_language"] = {
        lang: {
            **{metric: {s: _json_float(by_lang[COLUMNS[metric]].get((s, lang))) for s in SETTINGS}
               for metric in METRICS},
            **{name: _json_float(by_query_lang.get(lang)) for name, by_query_lang in pooled.items()},
            "num_queries": int(counts.get(lang, 0)),
        }
        for lang in langs
    }
    pairs: dict = {lang: {} for lang in langs}
    for (setting, x, y), value in cells["ap"].items():
        if setting in ("mono", "cross"):
            pairs[x][y] = float(value)
    report["pairs"] = {x: dict(sorted(row.items())) for x, row in pairs.items()}
    return report


class Evaluation(NamedTuple):
    """What ``evaluate_embeddings`` returns: the JSON-ready report and the per-query table behind it."""

    report: dict
    per_query: pd.DataFrame


def evaluate_embeddings(
    benchmark,
    query_embeddings: np.ndarray,
    candidate_embeddings: np.ndarray,
    progress: bool = False,
    index: EvalIndex | None = None,
) -> Evaluation:
    """Score embeddings on a benchmark in the mono, cross and multi settings.

    Embeddings: float32 arrays, rows aligned with ``benchmark.queries`` / ``benchmark.candidates``,
    L2-normalised (similarity = inner product). Returns ``Evaluation(report, per_query)``: the
    ``per_query_scores`` table, whose pooled rows also carry ``top10_same_language`` (the share of the
    query's pooled top 10 in its own language, from one FAISS search, ``pooled_top_k``), ``top_ids``
    (the ids of that top 10, best first, space-separated) and ``gold_ranks`` (the pooled rank of each
    relevant candidate as "lang:rank"), and its aggregate ``summarize_scores`` plus counts::

        {"map": {"mono", "cross", "multi"}, "map@20": {...}, "recall@1": {...}, "recall@10": {...},
         "rank_distance": float,                       # pooled setting, mean over query languages
         "top10_same_language": float,                 # pooled setting, mean over query languages
         "per_language": {lang: {"map": {...}, "map@20": {...}, "recall@1": {...}, "recall@10": {...},
                                 "rank_distance": float, "top10_same_language": float, "num_queries": int}},
         "pairs": {query_lang: {corpus_lang: map}},     # diagonal = mono; unscored cross pairs absent
         "num_queries": int, "num_candidates": int, "languages": [...]}

    A value with nothing to average (e.g. cross on a one-language benchmark) is None.
    """
    index = index or build_eval_index(benchmark)
    ranks = relevant_ranks(index, query_embeddings, candidate_embeddings, progress=progress)
    per_query = _frames(index, ranks, SETTINGS)
    top = pooled_top_k(query_embeddings, candidate_embeddings)  # one search: the share and the ids
    multi, order = pooled_query_order(index, per_query)
    per_query.loc[multi, "top10_same_language"] = same_language_share_of(index, top)[order]
    candidate_ids = np.asarray(_column(benchmark.candidates, "id"), dtype=object)
    per_query[TOP_IDS] = pd.Series(dtype=object)
    per_query.loc[multi, TOP_IDS] = [" ".join(row) for row in candidate_ids[top[order]]]
    per_query[GOLD_RANKS] = pd.Series(dtype=object)
    per_query.loc[multi, GOLD_RANKS] = np.asarray(_gold_rank_text(index, ranks), dtype=object)[order]
    report = summarize_scores(per_query)
    report["num_queries"] = len(index.query_ids)
    report["num_candidates"] = len(index.candidate_lang)
    report["languages"] = list(index.languages)
    return Evaluation(report, per_query)
