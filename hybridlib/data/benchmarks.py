"""Benchmarks (XQuAD-R, MLQA-R in the LAReQA construction) and training pair tables.

A benchmark is three things: a query table, a candidate table (every sentence of every paragraph in
every language) and the relevance map. Relevance is cross-lingual: a query's relevant set is the gold
sentence of its question id ("group") in every language present.

Files come from a local folder (argument or ``HYBRIDLIB_DATA_DIR``) or are downloaded once from the
pinned LAReQA commits into a user cache, always checked against the pinned sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import datasets
import pandas as pd

from ..cache import cache_dir, file_lock
from ..records import atomic_path
from .ids import candidate_id, paragraph_of
from .pinned import _spec, benchmark_languages
from .task_data import TaskData

# --- pinned sources -------------------------------------------------------------------------------

_RAW = "https://raw.githubusercontent.com/google-research-datasets/lareqa/{commit}/{name}/{lang}.json"


# --- locating and fetching files ------------------------------------------------------------------


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: Path, sha256: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, renamed only once the sha256 matches.

    An interrupted or corrupt download therefore never leaves a file at ``dest``.
    """
    with atomic_path(dest) as tmp:  # a mismatch raises inside: the temporary file goes, nothing is renamed
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        got = sha256_of(tmp)
        if got != sha256:
            raise ValueError(f"sha256 mismatch for {url}: expected {sha256}, got {got}; the file was discarded")
    return dest


def resolve_files(name: str, languages: list[str], data_dir: str | Path | None = None) -> dict[str, Path]:
    """Path of each language file of a LAReQA benchmark, verified against its pinned sha256 (``pinned_file``)."""
    spec = _spec(name)
    return {lang: pinned_file(f"{name}/{lang}.json", _RAW.format(commit=spec["commit"], name=name, lang=lang),
                              spec["sha256"][lang], data_dir)
            for lang in languages}


def pinned_file(relative: str, url: str, sha256: str, data_dir: str | Path | None = None) -> Path:
    """A data file at ``<folder>/<relative>``, verified against its pinned sha256.

    The folder is ``data_dir``, else ``$HYBRIDLIB_DATA_DIR`` (a local copy: nothing is downloaded), else the user
    cache, where a missing file is downloaded from ``url`` under a lock per file (processes that start together
    download it once, the others wait and reuse it).
    """
    local = data_dir or os.environ.get("HYBRIDLIB_DATA_DIR")
    folder = Path(local).expanduser() if local else cache_dir("data")
    path = folder / relative
    if local and not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the data folder {folder} (from {'data_dir' if data_dir else 'HYBRIDLIB_DATA_DIR'}) "
            f"must hold {relative} for every requested language. Copy the file there, or unset HYBRIDLIB_DATA_DIR "
            f"to download into {cache_dir('data')}."
        )
    if not local:  # the cache is ours: whoever holds the file's lock checks it and fetches what is missing
        with file_lock(path.with_name(f".{path.name}.lock")):  # concurrent first runs download it once
            if path.exists() and sha256_of(path) != sha256:
                path.unlink()  # a damaged cached copy: fetch it again
            if not path.exists():
                try:
                    download_file(url, path, sha256)
                except (urllib.error.URLError, TimeoutError, OSError) as err:
                    raise RuntimeError(
                        f"could not download {url} ({err}). With no network, put the file in a folder as "
                        f"<folder>/{relative} and pass data_dir=<folder> or set HYBRIDLIB_DATA_DIR=<folder>."
                    ) from err
    got = sha256_of(path)
    if got != sha256:
        raise ValueError(f"{path} has sha256 {got}, expected {sha256} (pinned): the file is damaged or "
                         "another version; replace it with the pinned upstream file.")
    return path


# --- benchmarks -----------------------------------------------------------------------------------


@dataclass(repr=False)
class Benchmark(TaskData):
    """A LAReQA retrieval benchmark: queries (id, group, lang, text), candidate sentences (id, lang, text, context)
    and cross-lingual relevance, as ``datasets.Dataset`` tables."""

    def counts(self) -> pd.DataFrame:
        """Questions and candidate sentences per language."""
        q = pd.Series(self.queries["lang"]).value_counts()
        c = pd.Series(self.candidates["lang"]).value_counts()
        return pd.DataFrame({"queries": q, "candidates": c}).loc[self.languages].rename_axis("lang")


def _read_squad(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)["data"]
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a valid LAReQA/SQuAD JSON file ({err}); replace it") from err


def _gold_sentence(breaks: list[list[int]], answer_start: int) -> int | None:
    for index, (start, end) in enumerate(breaks):
        if start <= answer_start < end:
            return index
    return None


def load_benchmark(
    name: str,
    languages: list[str] | None = None,
    data_dir: str | Path | None = None,
    max_groups: int | None = None,
) -> Benchmark:
    """Load XQuAD-R or MLQA-R in the LAReQA construction (docs/architecture.md, "Evaluation data").

    ``max_groups`` keeps the first N question groups (in English file order where English is loaded,
    otherwise in the order of the first language) and only the paragraphs they come from.
    """
    available = benchmark_languages(name)
    languages = sorted(available if languages is None else languages)
    unknown = [lang for lang in languages if lang not in available]
    if unknown or not languages:
        raise ValueError(f"languages {unknown or languages} not in {name}; available: {available}")
    if max_groups is not None and max_groups < 1:
        raise ValueError(f"max_groups must be a positive integer or None, got {max_groups!r}")
    files = resolve_files(name, languages, data_dir)
    parsed = {lang: _read_squad(files[lang]) for lang in languages}

    # First pass: every question with its gold sentence, and the group order.
    questions = []  # (lang, group, text, article, paragraph, sentence)
    group_order: dict[str, None] = {}
    for lang in sorted(languages, key=lambda code: code != "en"):  # English first: it holds every MLQA-R id
        for a, article in enumerate(parsed[lang]):
            for p, paragraph in enumerate(article["paragraphs"]):
                for qa in paragraph["qas"]:
                    s = _gold_sentence(paragraph["sentence_breaks"], qa["answers"][0]["answer_start"])
                    if s is None:
                        continue  # LAReQA drops answers that fall in no sentence
                    questions.append((lang, qa["id"], qa["question"], a, p, s))
                    group_order.setdefault(qa["id"], None)
    kept_groups = set(list(group_order)[:max_groups] if max_groups else group_order)

    kept_questions = [q for q in questions if q[1] in kept_groups]
    kept_paragraphs = {(q[0], q[3], q[4]) for q in kept_questions}

    candidate_rows = {"id": [], "lang": [], "text": [], "context": []}
    for lang in languages:
        for a, article in enumerate(parsed[lang]):
            for p, paragraph in enumerate(article["paragraphs"]):
                if max_groups and (lang, a, p) not in kept_paragraphs:
                    continue
                for s, sentence in enumerate(paragraph["sentences"]):
                    candidate_rows["id"].append(candidate_id(lang, a, p, s))
                    candidate_rows["lang"].append(lang)
                    candidate_rows["text"].append(sentence)
                    candidate_rows["context"].append(paragraph["context"])

    gold: dict[str, list[str]] = {}
    query_rows = {"id": [], "group": [], "lang": [], "text": []}
    seen = set()
    for lang, group, text, a, p, s in sorted(kept_questions, key=lambda q: (languages.index(q[0]),)):
        qid = f"{lang}:{group}"
        if qid in seen:
            raise ValueError(f"{files[lang]} repeats question id {group!r}; the file is not a LAReQA file")
        seen.add(qid)
        query_rows["id"].append(qid)
        query_rows["group"].append(group)
        query_rows["lang"].append(lang)
        query_rows["text"].append(text)
        gold.setdefault(group, []).append(candidate_id(lang, a, p, s))
    relevant = {qid: set(gold[group]) for qid, group in zip(query_rows["id"], query_rows["group"])}
    return Benchmark(
        name=name,
        languages=languages,
        queries=datasets.Dataset.from_dict(query_rows),
        candidates=datasets.Dataset.from_dict(candidate_rows),
        relevant=relevant,
    )


# --- pair tables ----------------------------------------------------------------------------------

PAIR_COLUMNS = ("group", "lang", "query", "passage")
# Optional: a hard negative (text, in the passage's language), and language-independent ids that say what the
# passage and the negative are relevant to: equal ids = the same answer, whatever the language. The sampler uses
# them to keep a negative out of a batch holding a query it answers (without them it compares texts).
NEGATIVE_COLUMNS = ("negative", "passage_id", "negative_id")


def pairs_from_benchmark(benchmark: Benchmark, negatives: bool = False) -> datasets.Dataset:
    """One training pair per (group, language): the question and its gold sentence in that language.

    ``negatives``: add an in-context hard negative per pair, the LAReQA way (``mine_negative``), with the ids
    ``passage_id`` (the group: a gold sentence answers its group in every language) and ``negative_id``.
    """
    candidate_text = dict(zip(benchmark.candidates["id"], benchmark.candidates["text"]))
    rows = {column: [] for column in PAIR_COLUMNS + (NEGATIVE_COLUMNS if negatives else ())}
    if negatives:
        answers = _answered_groups(benchmark)
        paragraphs: dict[str, list[str]] = {}
        for candidate in benchmark.candidates["id"]:  # in file order: sentence order within a paragraph
            paragraphs.setdefault(paragraph_of(candidate), []).append(candidate)
    for qid, group, lang, text in zip(
        benchmark.queries["id"], benchmark.queries["group"], benchmark.queries["lang"], benchmark.queries["text"]
    ):
        (gold,) = [c for c in benchmark.relevant[qid] if c.startswith(f"{lang}:")]
        rows["group"].append(group)
        rows["lang"].append(lang)
        rows["query"].append(text)
        rows["passage"].append(candidate_text[gold])
        if negatives:
            negative = mine_negative(gold, paragraphs[paragraph_of(gold)], answers, key=f"{group}/{lang}")
            rows["negative"].append(None if negative is None else candidate_text[negative])
            rows["passage_id"].append(group)
            rows["negative_id"].append(None if negative is None else _answer_id(negative, answers))
    return datasets.Dataset.from_dict(rows, features=datasets.Features(
        {column: datasets.Value("string") for column in rows}))


def _answered_groups(benchmark: Benchmark) -> dict[str, set[str]]:
    """Candidate id -> the groups whose gold it is (in its own language)."""
    answers: dict[str, set[str]] = {}
    for qid, group, lang in zip(benchmark.queries["id"], benchmark.queries["group"], benchmark.queries["lang"]):
        for candidate in benchmark.relevant[qid]:
            if candidate.startswith(f"{lang}:"):
                answers.setdefault(candidate, set()).add(group)
    return answers


def mine_negative(gold: str, paragraph: list[str], answers: dict[str, set[str]], key: str) -> str | None:
    """Another sentence of the gold's paragraph (a distractor from the same context), or None if there is none.

    A sentence that is the gold of several questions is skipped: its one ``negative_id`` could not name them all.
    The choice is a hash of ``key`` (group and language), so every run mines the same negatives.
    """
    options = [c for c in paragraph if c != gold and len(answers.get(c, ())) <= 1]
    if not options:
        return None
    return options[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(options)]


def _answer_id(candidate: str, answers: dict[str, set[str]]) -> str:
    """The id of what a candidate answers: the group whose gold it is, else its own (unique) candidate id."""
    (group,) = answers.get(candidate) or {candidate}
    return group


def load_pairs(source) -> datasets.Dataset:
    """A pair table from a ``datasets.Dataset``, a pandas DataFrame, or a .jsonl / .json / .parquet / .csv file.

    Keeps the pair columns and those of ``NEGATIVE_COLUMNS`` it has (every column a string); an empty negative
    means none.
    """
    if isinstance(source, datasets.Dataset):
        table = source
    elif isinstance(source, pd.DataFrame):
        table = datasets.Dataset.from_pandas(source, preserve_index=False)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"pair source {path} does not exist")
        readers = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
        if path.suffix not in readers:
            raise ValueError(f"pair source {path}: unsupported suffix {path.suffix!r}; use one of {sorted(readers)}")
        table = datasets.load_dataset(readers[path.suffix], data_files=str(path), split="train")
    missing = [column for column in PAIR_COLUMNS if column not in table.column_names]
    if missing:
        raise ValueError(f"pair table lacks columns {missing}; it needs {list(PAIR_COLUMNS)}, has {table.column_names}")
    columns = [c for c in PAIR_COLUMNS + NEGATIVE_COLUMNS if c in table.column_names]
    table = table.select_columns(columns)
    return table.cast(datasets.Features({column: datasets.Value("string") for column in columns}))


def normalise_text(text: str) -> str:
    """Case-folded, whitespace-collapsed form used for overlap checks."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def overlap_report(pairs: datasets.Dataset, benchmark: Benchmark, examples: int = 5) -> dict:
    """How many training texts also occur (after normalisation) in a benchmark.

    Counts distinct normalised texts: training queries found among benchmark queries, training passages
    found among benchmark candidate sentences, and either side found anywhere in the benchmark.
    """
    bench_queries = {normalise_text(t) for t in benchmark.queries["text"]}
    bench_candidates = {normalise_text(t) for t in benchmark.candidates["text"]}
    train_queries = {normalise_text(t) for t in pairs["query"]}
    train_passages = {normalise_text(t) for t in pairs["passage"]}
    query_hits = train_queries & bench_queries
    passage_hits = train_passages & bench_candidates
    any_hits = (train_queries | train_passages) & (bench_queries | bench_candidates)
    return {
        "benchmark": benchmark.name,
        "train_queries": len(train_queries),
        "train_passages": len(train_passages),
        "query_overlap": len(query_hits),
        "passage_overlap": len(passage_hits),
        "any_overlap": len(any_hits),
        "examples": sorted(any_hits, key=len, reverse=True)[:examples],
    }
