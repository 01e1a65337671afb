"""Language bias of an embedding space, beyond the pooled scores: is the language identifiable, and is the
bias a constant per-language offset?

Three measures, computed for every run from the embeddings the evaluation already has (``experiment.evaluate_model``):

- **language-identity probe** (``language_probe``): cross-validated accuracy of a linear classifier
  (standardised features, multinomial logistic regression) that predicts a candidate's language from its
  embedding. Folds are split by *translated paragraph*: the paragraphs that share a question's gold sentences
  (translations of one another) form one group, and a group is never split between training and test folds,
  so the probe cannot recognise a sentence it saw in another language. Chance is 1/L for L languages. The 95%
  interval is a Wilson score interval over the candidates (each predicted once, out of fold); candidates of one
  paragraph are not independent, so read it as a lower bound on the uncertainty.
- **a projection that separates languages** (``lda_projection``): the candidates on the first two linear
  discriminant axes over the languages (shrinkage LDA), beside the PCA projection; LDA is fitted to separate
  languages, so read it by comparing runs and with the probe's held-out accuracy.
- **per-language mean-centring** (``centred_scores``; Libovický, Rosa and Fraser 2020, "On the language
  neutrality of pre-trained multilingual representations"): subtract each language's mean candidate embedding
  from its candidates and each language's mean query embedding from its queries (means over this benchmark),
  renormalise, and score again (``metrics.per_query_scores``, all settings, and the pooled top 10). What the
  centring removes is the part of the bias that is a constant offset per language. The report says how much of
  the pooled mAP gap (mono mAP minus pooled mAP, in the same embedding space) and of the rank distance
  disappears.

The per-query values after centring go into the run's per-query table as extra columns (``metrics.CENTRED``:
``ap_centred`` in every setting, ``rank_distance_centred`` and ``top10_same_language_centred`` in the pooled
rows), so ``stats.bootstrap_ci`` / ``stats.paired_test`` give intervals and tests for ``map_centred`` etc.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.ids import paragraph_of
from .metrics import (CENTRED, EvalIndex, build_eval_index, per_query_scores, pooled_query_order, pooled_top_k,
                      same_language_share_of, summarize_scores)
from .stats import wilson_interval

PROBE_FOLDS = 5
PROBE_C = 1.0  # inverse regularisation strength of the probe (on standardised features)


# --- groups of translated paragraphs -------------------------------------------------------------------


def translation_groups(benchmark) -> np.ndarray:
    """Per candidate: an integer group shared by the paragraphs that are translations of one another.

    Two paragraphs are linked when they hold gold sentences of the same question group (the question's
    translations); groups are the connected components. A paragraph with no gold stays on its own.
    """
    candidate_ids = list(benchmark.candidates["id"])
    paragraphs = [paragraph_of(c) for c in candidate_ids]
    parent = {p: p for p in dict.fromkeys(paragraphs)}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    golds_by_group: dict[str, set[str]] = {}
    for qid, group in zip(benchmark.queries["id"], benchmark.queries["group"]):
        golds_by_group.setdefault(group, set()).update(benchmark.relevant.get(qid, ()))
    for golds in golds_by_group.values():
        roots = [find(paragraph_of(c)) for c in golds if paragraph_of(c) in parent]
        for root in roots[1:]:
            parent[find(root)] = find(roots[0])
    label = {root: i for i, root in enumerate(dict.fromkeys(find(p) for p in parent))}
    return np.array([label[find(p)] for p in paragraphs], dtype=np.int64)


# --- the probe ---------------------------------------------------------------------------------------------


def _splits(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int):
    """Cross-validation folds: by translation group where there are at least two groups, else stratified."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    n_groups = len(np.unique(groups))
    if n_groups >= 2:
        splitter = GroupKFold(n_splits=min(folds, n_groups))
        return list(splitter.split(labels, labels, groups)), "translated paragraphs (GroupKFold)"
    smallest = int(np.bincount(labels).min())
    splitter = StratifiedKFold(n_splits=max(2, min(folds, smallest)), shuffle=True, random_state=seed)
    return list(splitter.split(labels, labels)), "candidates, stratified by language (one translation group only)"


def _probe_predictions(features: np.ndarray, labels: np.ndarray, splits) -> tuple[np.ndarray, list[float]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    predicted = np.full(len(labels), -1, dtype=np.int64)
    fold_accuracy = []
    for train, test in splits:
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=2000))
        classifier.fit(features[train], labels[train])
        predicted[test] = classifier.predict(features[test])
        fold_accuracy.append(float(np.mean(predicted[test] == labels[test])))
    return predicted, fold_accuracy


def language_probe(embeddings: np.ndarray, languages, groups: np.ndarray | None = None,
                   folds: int = PROBE_FOLDS, seed: int = 0) -> dict | None:
    """Cross-validated accuracy of a linear classifier predicting each row's language from its embedding.

    ``languages``: the language of each row; ``groups``: rows that must stay in one fold (translations), None:
    every row its own group. Returns None with fewer than two languages (nothing to predict). Keys: accuracy,
    low, high (95% Wilson interval over rows), interval, chance (1/L), majority (share of the largest language),
    folds, fold_accuracy, split, candidates, languages, per_language (accuracy per true language), classifier.
    """
    names, labels = np.unique(np.asarray(languages, dtype=object).astype(str), return_inverse=True)
    if len(names) < 2:
        return None
    features = np.asarray(embeddings, dtype=np.float64)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    splits, split = _splits(labels, groups, folds, seed)
    predicted, fold_accuracy = _probe_predictions(features, labels, splits)
    correct = predicted == labels
    low, high = wilson_interval(int(correct.sum()), len(correct))
    counts = np.bincount(labels, minlength=len(names))
    result = {
        "accuracy": float(correct.mean()), "low": low, "high": high,
        "interval": "95% Wilson interval over candidates (out-of-fold predictions)",
        "chance": 1.0 / len(names), "majority": float(counts.max() / counts.sum()),
        "folds": len(splits), "fold_accuracy": fold_accuracy, "split": split,
        "candidates": int(len(labels)), "languages": [str(n) for n in names],
        "per_language": {str(name): float(correct[labels == i].mean()) for i, name in enumerate(names)},
        "classifier": f"StandardScaler + LogisticRegression(multinomial, C={PROBE_C})",
    }
    return result


# --- the LDA projection -------------------------------------------------------------------------------------


def lda_projection(benchmark, embeddings: np.ndarray, dims: int = 2) -> pd.DataFrame | None:
    """Candidates on their first ``dims`` linear discriminant axes over the languages (``ld1``, ``ld2``, ...).

    Shrinkage LDA (Ledoit-Wolf), so a few hundred candidates per language in hundreds of dimensions do not
    separate by overfitting alone. L languages give at most L - 1 axes; missing axes are 0. None for one language.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    langs = np.asarray(benchmark.candidates["lang"], dtype=object).astype(str)
    names, labels = np.unique(langs, return_inverse=True)
    axes = min(dims, len(names) - 1)
    if axes < 1:
        return None
    lda = LinearDiscriminantAnalysis(n_components=axes, solver="eigen", shrinkage="auto")
    coords = lda.fit(np.asarray(embeddings, dtype=np.float64), labels).transform(np.asarray(embeddings, np.float64))
    coords = np.hstack([coords, np.zeros((len(coords), dims - axes))])
    frame = pd.DataFrame(coords, columns=[f"ld{i + 1}" for i in range(dims)])
    frame.insert(0, "lang", langs)
    frame.insert(0, "candidate_id", list(benchmark.candidates["id"]))
    return frame


# --- per-language mean-centring -----------------------------------------------------------------------------


def centre_by_language(embeddings: np.ndarray, language_codes: np.ndarray) -> np.ndarray:
    """Each row minus the mean of its language's rows, renormalised to unit length (float32)."""
    out = np.asarray(embeddings, dtype=np.float64).copy()
    codes = np.asarray(language_codes)
    for code in np.unique(codes):
        rows = codes == code
        out[rows] -= out[rows].mean(axis=0, keepdims=True)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32)


def centred_embeddings(index: EvalIndex, query_embeddings: np.ndarray,
                       candidate_embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Queries and candidates centred per language (``centre_by_language``), as ``centred_scores`` uses them."""
    return (centre_by_language(query_embeddings, index.query_lang),
            centre_by_language(candidate_embeddings, index.candidate_lang))


def centred_scores(benchmark, query_embeddings: np.ndarray, candidate_embeddings: np.ndarray,
                   index: EvalIndex | None = None, centred: tuple[np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
    """The ``metrics.per_query_scores`` table of the centred embeddings, with the pooled top-10 share.

    ``centred``: the output of ``centred_embeddings`` when the caller has it already.
    """
    index = index or build_eval_index(benchmark)
    queries, candidates = centred or centred_embeddings(index, query_embeddings, candidate_embeddings)
    table = per_query_scores(benchmark, queries, candidates, index=index)
    multi, order = pooled_query_order(index, table)
    table.loc[multi, "top10_same_language"] = same_language_share_of(index, pooled_top_k(queries, candidates))[order]
    return table


def add_centred_columns(per_query: pd.DataFrame, centred: pd.DataFrame) -> pd.DataFrame:
    """``per_query`` with the centred table's ap, rank_distance and top10 share as ``metrics.CENTRED`` columns."""
    key = ["setting", "query_id", "corpus_lang"]
    if not per_query[key].reset_index(drop=True).equals(centred[key].reset_index(drop=True)):
        raise ValueError("the centred per-query table does not list the same (setting, query, corpus) rows")
    out = per_query.copy()
    for column in CENTRED.values():
        out[column] = centred[column.removesuffix("_centred")].to_numpy()
    return out


def centring_report(report: dict, centred: pd.DataFrame) -> dict:
    """What centring changes: the centred scores and the shares of the gap and rank distance that disappear.

    ``report``: the uncentred ``metrics.evaluate_embeddings`` report; ``centred``: ``centred_scores``.
    ``map_gap`` = mono mAP - pooled mAP (what pooling the languages costs), ``map_gap_centred`` the same after
    centring (centred mono - centred pooled); ``map_gap_closed`` = 1 - map_gap_centred / map_gap (the share of
    the gap that disappears); ``map_multi_gain`` = centred pooled mAP - pooled mAP; ``rank_distance_removed`` =
    1 - centred rank distance / rank distance. A share near 1 means the bias is a constant offset per language;
    near 0, it is not; below 0, centring made it worse.
    """
    summary = summarize_scores(centred)

    def share(gain, whole):
        return None if gain is None or not whole else float(gain / whole)

    def minus(a, b):
        return None if a is None or b is None else a - b

    gap = minus(report["map"]["mono"], report["map"]["multi"])
    gap_c = minus(summary["map"]["mono"], summary["map"]["multi"])
    rd, rd_c = report.get("rank_distance"), summary.get("rank_distance")
    return {
        "method": "per-language mean of the candidates and of the queries subtracted, renormalised, re-scored "
                  "(Libovický et al. 2020)",
        "map": summary["map"],
        "rank_distance": rd_c,
        "top10_same_language": summary.get("top10_same_language"),
        "map_gap": gap,
        "map_gap_centred": gap_c,
        "map_gap_closed": share(minus(gap, gap_c), gap),
        "map_multi_gain": minus(summary["map"]["multi"], report["map"]["multi"]),
        "rank_distance_removed": share(minus(rd, rd_c), rd),
        "per_language": {lang: {"map_multi": values["map"]["multi"], "rank_distance": values.get("rank_distance"),
                                "top10_same_language": values.get("top10_same_language")}
                         for lang, values in summary["per_language"].items()},
    }


def evaluate_bias(benchmark, query_embeddings: np.ndarray, candidate_embeddings: np.ndarray, report: dict,
                  per_query: pd.DataFrame, index: EvalIndex | None = None) -> tuple[dict, pd.DataFrame]:
    """Every bias measure of one run: ``({"language_probe": ..., "centred": ...}, per_query + centred columns)``.

    ``report`` and ``per_query``: what ``metrics.evaluate_embeddings`` returned for these embeddings.
    """
    index = index or build_eval_index(benchmark)
    centred = centred_embeddings(index, query_embeddings, candidate_embeddings)
    table = centred_scores(benchmark, query_embeddings, candidate_embeddings, index=index, centred=centred)
    probe = language_probe(candidate_embeddings, benchmark.candidates["lang"], translation_groups(benchmark))
    return ({"language_probe": probe, "centred": centring_report(report, table)},
            add_centred_columns(per_query, table))
