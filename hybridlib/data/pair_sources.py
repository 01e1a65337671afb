"""Large parallel training-pair sources, streamed with ``datasets`` (docs/architecture.md, "Training pairs").

A pair table has the columns ``group`` (an id shared across languages), ``lang``, ``query`` and ``passage``: one row
per group and language. :func:`hybridlib.data.load_pairs` reads such a table from one local file; this module builds
one from sources too large to download whole:

- :func:`stream_parallel_pairs`: TSV sources laid out like MS MARCO (per language a ``id \\t text`` queries file and
  a ``id \\t text`` passage collection, plus one language-independent file of relevant ``(qid, pid)`` ids). The ids
  are shared across languages, which is what makes such a source parallel.
- :func:`mmarco_pairs`: the same for mMARCO (``unicamp-dl/mmarco``, MS MARCO passage ranking machine-translated into
  13 languages plus the English original), at a pinned revision.
- :func:`stream_pair_files`: parquet / JSONL files that already have the four pair columns.

Every file is read with ``datasets.load_dataset(..., streaming=True)``: rows are streamed from ``hf://`` or
``https://`` URLs or local paths and never written to disk or the ``datasets`` cache. Only the texts of the wanted
ids are kept in memory.

Cost. A queries or collection file is scanned in file order and the scan stops at the first chunk (``chunk_rows``
rows) after which every wanted id has been seen. The mMARCO collections are sorted by passage id, and the wanted
passages of a sample of queries are spread over the whole id range, so in practice every requested language costs
one streamed pass over its collection (2.7 GB for Chinese to 7.7 GB for Hindi, 3 to 4 GB for most) plus its
queries file (30 to 80 MB); only ids that happen to come early stop the scan early.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import re
import warnings
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from ..progress import progress_bar
from ..records import atomic_path
from .benchmarks import NEGATIVE_COLUMNS, PAIR_COLUMNS, Benchmark

# --- mMARCO -------------------------------------------------------------------------------------------

MMARCO_REPO = "unicamp-dl/mmarco"
# Head of ``main`` since 2024-03-06 ("Update README.md"); the data files were last changed on 2022-02-08.
MMARCO_REVISION = "6d039c4638c0ba3e46a9cb7b498b145e7edc6230"

# ISO 639-1 code -> mMARCO's language name (the Google-translation files, ``data/google``)
MMARCO_LANGUAGES = {
    "en": "english", "zh": "chinese", "fr": "french", "de": "german", "id": "indonesian", "it": "italian",
    "pt": "portuguese", "ru": "russian", "es": "spanish", "ar": "arabic", "nl": "dutch", "hi": "hindi",
    "ja": "japanese", "vi": "vietnamese",
}
MMARCO_COLLECTION = "data/google/collections/{name}_collection.tsv"
MMARCO_SPLITS = {
    # train: the official small training triples (qid, positive pid, negative pid), ~39.8M lines, 905 MB
    "train": {"queries": "data/google/queries/train/{name}_queries.train.tsv",
              "qrels": "data/triples.train.ids.small.tsv"},
    # dev: the 6,980 queries of MS MARCO dev.small and their TREC qrels (qid 0 pid 1). Evaluation data: do not train
    # on it when reporting MS MARCO / mMARCO dev scores.
    "dev": {"queries": "data/google/queries/dev/{name}_queries.dev.small.tsv",
            "qrels": "data/qrels.dev.small.tsv"},
}

_TSV_FEATURES = datasets.Features({"id": datasets.Value("string"), "text": datasets.Value("string")})
_EXAMPLES = 10  # ids listed per reason in the report


def mmarco_language(language: str) -> tuple[str, str]:
    """``(ISO code, mMARCO name)`` for an ISO code (``"de"``) or an mMARCO name (``"german"``)."""
    key = language.strip().lower()
    if key in MMARCO_LANGUAGES:
        return key, MMARCO_LANGUAGES[key]
    by_name = {name: code for code, name in MMARCO_LANGUAGES.items()}
    if key in by_name:
        return by_name[key], key
    raise ValueError(f"mMARCO has no language {language!r}; use one of the codes {sorted(MMARCO_LANGUAGES)} "
                     f"or names {sorted(by_name)}")


def mmarco_files(languages=tuple(MMARCO_LANGUAGES), split: str = "train", revision: str = MMARCO_REVISION,
                 base_url: str | os.PathLike | None = None) -> dict:
    """The files :func:`mmarco_pairs` reads: ``{"queries": {iso: path}, "passages": {iso: path}, "qrels": path}``.

    ``base_url`` is the root of a copy of the dataset repository (the folder that holds ``data/``): a local folder,
    ``https://huggingface.co/datasets/unicamp-dl/mmarco/resolve/<revision>`` or an ``hf://`` root; ``revision`` is
    ignored then. By default the files are ``hf://datasets/unicamp-dl/mmarco@<revision>/...`` (read through
    ``huggingface_hub.HfFileSystem``; ``datasets`` turns ``https://huggingface.co/.../resolve/...`` URLs into such
    paths too). Other ``https://`` hosts, mirrors for instance, need ``aiohttp`` for fsspec's HTTP file system.
    """
    if split not in MMARCO_SPLITS:
        raise ValueError(f"mMARCO split must be one of {sorted(MMARCO_SPLITS)}, got {split!r}")
    if isinstance(languages, str):
        languages = [languages]
    codes = [mmarco_language(language) for language in languages]
    if not codes:
        raise ValueError("mmarco_pairs needs at least one language")
    seen = [code for code, _ in codes]
    if len(set(seen)) != len(seen):
        raise ValueError(f"languages {list(languages)} name a language twice")
    root = f"hf://datasets/{MMARCO_REPO}@{revision}" if base_url is None else str(base_url).rstrip("/")
    layout = MMARCO_SPLITS[split]
    return {
        "queries": {code: f"{root}/{layout['queries'].format(name=name)}" for code, name in codes},
        "passages": {code: f"{root}/{MMARCO_COLLECTION.format(name=name)}" for code, name in codes},
        "qrels": f"{root}/{layout['qrels']}",
    }


def mmarco_pairs(languages=tuple(MMARCO_LANGUAGES), max_groups: int | None = None, split: str = "train",
                 revision: str = MMARCO_REVISION, base_url: str | os.PathLike | None = None, progress: bool = True,
                 chunk_rows: int = 10_000, negatives: bool = False) -> datasets.Dataset:
    """The mMARCO pair table for ``languages`` (ISO codes or mMARCO names; ``lang`` is written as ISO codes).

    Groups are MS MARCO query ids taken in the order of the split's qrels file (``train``: the training triples,
    first positive per query); ``max_groups`` caps them. See :func:`stream_parallel_pairs` for what is read and
    :func:`mmarco_files` for ``revision`` and ``base_url``. Without ``max_groups`` the whole 905 MB triples file is
    streamed too (about 400k groups). ``negatives``: keep each group's hard negative (the triples' third id; train
    split only).
    """
    files = mmarco_files(languages, split=split, revision=revision, base_url=base_url)
    where = f"{MMARCO_REPO}@{revision}" if base_url is None else base_url
    return stream_parallel_pairs(files["queries"], files["passages"], files["qrels"], max_groups=max_groups,
                                 progress=progress, chunk_rows=chunk_rows,
                                 source=f"mMARCO {split} ({where})", negatives=negatives)


# --- SQuADShifts (English; a validation source) ------------------------------------------------------

SQUADSHIFTS_REPO = "ludwigschmidt/squadshifts"  # the hub's "squadshifts" (Miller et al. 2020), CC BY 4.0
SQUADSHIFTS_REVISION = "refs%2Fconvert%2Fparquet"  # the hub's parquet conversion (a branch; "/" escaped for hf://)
SQUADSHIFTS_SUBSETS = ("new_wiki", "nyt", "reddit", "amazon")
SQUADSHIFTS_FILE = "{subset}/test/0000.parquet"  # each subset has one split, test; columns as SQuAD's
# a plain punctuation rule, not a trained splitter: end mark, closing quotes, space, then no lower-case letter
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+(?![a-z])")


def squadshifts_files(subsets=SQUADSHIFTS_SUBSETS, base_url: str | os.PathLike | None = None) -> dict[str, str]:
    """``{subset: parquet path}``; ``base_url``: the root of a copy with the hub's layout (a local folder, say)."""
    unknown = [subset for subset in subsets if subset not in SQUADSHIFTS_SUBSETS]
    if unknown or not subsets:
        raise ValueError(f"SQuADShifts subsets {unknown or list(subsets)}: choose from {list(SQUADSHIFTS_SUBSETS)}")
    root = (f"hf://datasets/{SQUADSHIFTS_REPO}@{SQUADSHIFTS_REVISION}" if base_url is None
            else str(base_url).rstrip("/"))
    return {subset: f"{root}/{SQUADSHIFTS_FILE.format(subset=subset)}" for subset in subsets}


def sentence_breaks(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of each sentence of ``text``: cut after ``.``, ``!`` or ``?`` (and closing quotes) and space,
    unless a lower-case letter follows (``"Yes!" she said.`` stays one sentence)."""
    starts = [0] + [match.end() for match in _SENTENCE_END.finditer(text) if match.end() < len(text)]
    return list(zip(starts, starts[1:] + [len(text)]))


def squadshifts_benchmark(subsets=SQUADSHIFTS_SUBSETS, base_url: str | os.PathLike | None = None,
                          max_groups: int | None = None) -> Benchmark:
    """SQuADShifts as a one-language (``en``) benchmark in the LAReQA construction, streamed with ``datasets``.

    Each context is split into sentences (``sentence_breaks``); a question's gold is the sentence holding its first
    answer's start. Candidate ids are ``en:<subset>:<context>:<sentence>``; groups are the question ids.
    ``hybridlib.data.pairs_from_benchmark`` turns it into (question, gold sentence) pairs, with mined negatives too.
    ``max_groups``: the first N questions (in subset order).
    """
    queries = {"id": [], "group": [], "lang": [], "text": []}
    candidates = {"id": [], "lang": [], "text": [], "context": []}
    relevant: dict[str, set[str]] = {}
    for subset, path in squadshifts_files(subsets, base_url).items():
        contexts: dict[str, int] = {}
        stream = datasets.load_dataset("parquet", data_files=path, split="train", streaming=True)
        for row in stream:
            if max_groups is not None and len(queries["id"]) >= max_groups:
                break
            context = row["context"]
            if context not in contexts:
                contexts[context] = len(contexts)
                for s, (start, end) in enumerate(sentence_breaks(context)):
                    candidates["id"].append(f"en:{subset}:{contexts[context]}:{s}")
                    candidates["lang"].append("en")
                    candidates["text"].append(context[start:end].strip())
                    candidates["context"].append(context)
            answer_start = row["answers"]["answer_start"][0]
            gold = [s for s, (start, end) in enumerate(sentence_breaks(context)) if start <= answer_start < end]
            if not gold:
                continue  # as LAReQA: an answer in no sentence is dropped
            qid = f"en:{row['id']}"
            queries["id"].append(qid)
            queries["group"].append(row["id"])
            queries["lang"].append("en")
            queries["text"].append(row["question"])
            relevant[qid] = {f"en:{subset}:{contexts[context]}:{gold[0]}"}
    return Benchmark(name="squadshifts", languages=["en"], queries=datasets.Dataset.from_dict(queries),
                     candidates=datasets.Dataset.from_dict(candidates), relevant=relevant)


# --- parallel TSV sources -------------------------------------------------------------------------------


def _stream_tsv(path: str, chunk_rows: int) -> datasets.IterableDataset:
    """``id \\t text`` rows of one file, streamed. No quoting (MS MARCO texts hold bare ``"``), no NA parsing."""
    return datasets.load_dataset(
        "csv", data_files=str(path), split="train", streaming=True, delimiter="\t", column_names=["id", "text"],
        quoting=3,  # csv.QUOTE_NONE: a '"' is text, never a field delimiter
        na_filter=False,  # a text "NA" or "null" stays text
        features=_TSV_FEATURES, chunksize=chunk_rows,
    )


def _scan(path: str, wanted: set[str], what: str, chunk_rows: int, progress: bool) -> tuple[dict[str, str], dict]:
    """Texts of the ``wanted`` ids in one TSV file (first occurrence wins), stopping once all are found."""
    found: dict[str, str] = {}
    remaining = set(wanted)
    rows = 0
    lookup = pa.array(sorted(remaining), pa.string())  # ids filtered in Arrow: unwanted texts never become Python
    with progress_bar(desc=what, unit=" rows", unit_scale=True, disable=not progress, leave=False) as bar:
        if remaining:
            for table in _stream_tsv(path, chunk_rows).with_format("arrow").iter(batch_size=chunk_rows):
                rows += table.num_rows
                bar.update(table.num_rows)
                hits = table.filter(pc.is_in(table["id"], value_set=lookup))
                for id_, text in zip(hits["id"].to_pylist(), hits["text"].to_pylist()):
                    if id_ in remaining:
                        found[id_] = "" if text is None else text
                        remaining.discard(id_)
                if not remaining:
                    break
                if 2 * len(remaining) < len(lookup):
                    lookup = pa.array(sorted(remaining), pa.string())
    return found, {"path": str(path), "rows_read": rows, "wanted": len(wanted), "found": len(found),
                   "all_found": not remaining}


def read_qrels(path: str, max_groups: int | None = None) -> tuple[dict[str, tuple[str, str | None]], int]:
    """``{qid: (positive pid, negative pid or None)}`` in file order, first line per qid, at most ``max_groups``
    qids; and the lines read.

    Accepts ``qid pid``, the triples ids ``qid pos_pid neg_pid`` (the only format with a negative) and TREC qrels
    ``qid 0 pid relevance`` (rows with relevance <= 0 are skipped), separated by tabs or spaces. Stops reading once
    ``max_groups`` qids are found.
    """
    relevant: dict[str, tuple[str, str | None]] = {}
    lines = 0
    stream = datasets.load_dataset("text", data_files=str(path), split="train", streaming=True)
    for batch in stream.iter(batch_size=10_000):
        for line in batch["text"]:
            lines += 1
            fields = line.split()
            if not fields:
                continue
            if len(fields) in (2, 3):
                qid, pid, negative = fields[0], fields[1], (fields[2] if len(fields) == 3 else None)
            elif len(fields) == 4:
                qid, pid, negative = fields[0], fields[2], None
                if float(fields[3]) <= 0:
                    continue
            else:
                raise ValueError(f"{path}, line {lines}: {len(fields)} fields in {line[:80]!r}; expected 'qid pid', "
                                 "'qid pos_pid neg_pid' or 'qid 0 pid relevance'")
            if qid not in relevant:
                relevant[qid] = (pid, negative)
                if max_groups is not None and len(relevant) >= max_groups:
                    return relevant, lines
    return relevant, lines


def stream_parallel_pairs(queries: dict[str, str], passages: dict[str, str], qrels: str, languages=None,
                          max_groups: int | None = None, progress: bool = True, chunk_rows: int = 10_000,
                          source: str | None = None, negatives: bool = False) -> datasets.Dataset:
    """A pair table from a parallel TSV source.

    ``queries`` / ``passages`` map a language label (written to ``lang``) to its ``id \\t text`` file: a local
    path, an ``hf://`` or an ``https://`` URL. ``qrels`` lists relevant ``(qid, pid)`` pairs, in one id space
    shared by every language (see :func:`read_qrels` for its formats). ``languages`` selects labels (default: all
    of ``queries``).

    The first ``max_groups`` distinct qids of ``qrels`` (all when None) become the groups, each with its first
    positive pid. Each language's queries file and collection are then streamed (never downloaded to disk) until
    every wanted id has been seen: in general that is a full pass over each collection (see the module docstring).
    A group missing its query or passage in any requested language is dropped from all of them, with a warning
    naming the counts per language and reason. Rows come group by group in qrels order, languages in the order
    given. The table's ``info.description`` holds a JSON report (:func:`pair_source_report`): per file the rows
    read and whether every wanted id was found; groups read, kept and dropped (counts and example qids).

    ``negatives``: also the hard negative of each group (the third id of ``qid pos_pid neg_pid`` qrels, streamed from
    the collections with the positives, so the scan stops as early), as the columns ``negative`` (its text in the
    row's language; None where that collection lacks it: the group is kept), ``passage_id`` and ``negative_id`` (the
    pids). The report counts the missing negatives per language.
    """
    if max_groups is not None and (not isinstance(max_groups, int) or isinstance(max_groups, bool) or max_groups < 1):
        raise ValueError(f"max_groups must be a positive integer or None, got {max_groups!r}")
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    langs = list(queries) if languages is None else ([languages] if isinstance(languages, str) else list(languages))
    if not langs:
        raise ValueError("no languages to read")
    for role, files in (("queries", queries), ("passages", passages)):
        missing = [lang for lang in langs if lang not in files]
        if missing:
            raise ValueError(f"no {role} file for languages {missing}; {role} has {sorted(files)}")
    if len(set(langs)) != len(langs):
        raise ValueError(f"languages {langs} name a language twice")

    relevant, qrels_lines = read_qrels(qrels, max_groups)
    if not relevant:
        raise ValueError(f"{qrels} holds no relevant (qid, pid) pair")
    if negatives and any(negative is None for _, negative in relevant.values()):
        raise ValueError(f"negatives asked, but {qrels} is not a triples file ('qid pos_pid neg_pid' on every line)")
    positives = {qid: pid for qid, (pid, _) in relevant.items()}
    wanted_queries, wanted_passages = set(positives), set(positives.values())
    if negatives:
        wanted_passages |= {negative for _, negative in relevant.values()}

    query_text, passage_text, scans = {}, {}, {}
    for lang in langs:
        query_text[lang], query_scan = _scan(queries[lang], wanted_queries, f"{lang} queries", chunk_rows, progress)
        passage_text[lang], passage_scan = _scan(passages[lang], wanted_passages, f"{lang} passages", chunk_rows,
                                                 progress)
        scans[lang] = {"queries": query_scan, "passages": passage_scan}

    rows = {column: [] for column in PAIR_COLUMNS + (NEGATIVE_COLUMNS if negatives else ())}
    dropped: dict[str, dict[str, list[str]]] = {}
    missing_negatives = {lang: 0 for lang in langs} if negatives else None
    n_dropped = 0
    for qid, (pid, negative) in relevant.items():
        missing = {}
        for lang in langs:
            reasons = [reason for reason, ok in (("missing_query", qid in query_text[lang]),
                                                 ("missing_passage", pid in passage_text[lang])) if not ok]
            if reasons:
                missing[lang] = reasons
        if missing:
            n_dropped += 1
            for lang, reasons in missing.items():
                for reason in reasons:
                    dropped.setdefault(lang, {}).setdefault(reason, []).append(qid)
            continue
        for lang in langs:
            rows["group"].append(qid)
            rows["lang"].append(lang)
            rows["query"].append(query_text[lang][qid])
            rows["passage"].append(passage_text[lang][pid])
            if negatives:
                rows["negative"].append(passage_text[lang].get(negative))
                rows["passage_id"].append(pid)
                rows["negative_id"].append(negative)
                missing_negatives[lang] += negative not in passage_text[lang]

    dropped_counts = {lang: {reason: len(qids) for reason, qids in reasons.items()}
                      for lang, reasons in dropped.items()}
    report = {
        "source": source or "parallel TSV",
        "qrels": {"path": str(qrels), "lines_read": qrels_lines},
        "languages": langs,
        "max_groups": max_groups,
        "groups_read": len(positives),
        "groups_kept": len(positives) - n_dropped,
        "groups_dropped": n_dropped,
        "dropped": dropped_counts,
        "dropped_examples": {lang: {reason: qids[:_EXAMPLES] for reason, qids in reasons.items()}
                             for lang, reasons in dropped.items()},
        "rows": len(rows["group"]),
        "missing_negatives": missing_negatives,
        "scans": scans,
    }
    if n_dropped:
        warnings.warn(f"{n_dropped} of {len(positives)} groups dropped: not present in every language "
                      f"(per language and reason: {dropped_counts}; example qids: {report['dropped_examples']})",
                      stacklevel=2)
    if not rows["group"]:
        raise ValueError(f"no group is present in every language {langs}: {json.dumps(report)}")
    if progress:
        print(f"{report['source']}: {report['groups_kept']} groups x {len(langs)} languages = {report['rows']} pairs; "
              f"{n_dropped} of {len(positives)} groups dropped {dropped_counts if n_dropped else ''}".rstrip(),
              flush=True)
    return _table(rows, report)


def _table(rows: dict[str, list], report: dict) -> datasets.Dataset:
    """The pair table, all columns strings, with ``report`` as JSON in ``info.description``."""
    features = datasets.Features({column: datasets.Value("string") for column in rows})
    info = datasets.DatasetInfo(description=json.dumps(report), features=features)
    return datasets.Dataset.from_dict(rows, features=features, info=info)


def pair_source_report(pairs: datasets.Dataset) -> dict:
    """The report :func:`stream_parallel_pairs` / :func:`stream_pair_files` stored in ``pairs.info.description``."""
    try:
        return json.loads(pairs.info.description or "")
    except json.JSONDecodeError as err:
        raise ValueError("this pair table carries no pair-source report") from err


# --- ready pair files -----------------------------------------------------------------------------------

_READERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


def _reader(path: str) -> str:
    name = path.split("?", 1)[0].lower()
    for suffix, reader in _READERS.items():
        if name.endswith(suffix) or name.endswith(suffix + ".gz") or name.endswith(suffix + ".zst"):
            return reader
    raise ValueError(f"pair file {path}: unsupported type; use {sorted(_READERS)} (optionally .gz / .zst)")


def _expand(paths_or_glob) -> list[str]:
    """Files named by paths, URLs, glob patterns (local or fsspec, e.g. ``hf://``) or local folders, in order."""
    items = [paths_or_glob] if isinstance(paths_or_glob, (str, os.PathLike)) else list(paths_or_glob)
    files: list[str] = []
    for item in map(str, items):
        has_glob = any(char in item for char in "*?[")
        if "://" in item:
            if has_glob:
                import fsspec

                fs, pattern = fsspec.core.url_to_fs(item)
                matches = [fs.unstrip_protocol(match) for match in sorted(fs.glob(pattern))]
                if not matches:
                    raise FileNotFoundError(f"no pair file matches {item}")
                files += matches
            else:
                files.append(item)
            continue
        local = os.path.expanduser(item)
        if os.path.isdir(local):
            matches = sorted(str(p) for p in Path(local).rglob("*") if p.is_file() and _is_pair_file(str(p)))
        elif has_glob:
            matches = sorted(globlib.glob(local, recursive=True))
        else:
            if not os.path.exists(local):
                raise FileNotFoundError(f"pair file {local} does not exist")
            matches = [local]
        if not matches:
            raise FileNotFoundError(f"no pair file matches {item}")
        files += matches
    return files


def _is_pair_file(path: str) -> bool:
    try:
        _reader(path)
        return True
    except ValueError:
        return False


def stream_pair_files(paths_or_glob, max_rows: int | None = None, progress: bool = False) -> datasets.Dataset:
    """A pair table from parquet / JSONL files that have the columns ``group, lang, query, passage``.

    ``paths_or_glob``: a path, URL (``hf://``, ``https://``), glob pattern or folder, or a list of them. Files are
    streamed in order and only the first ``max_rows`` rows (all when None) are materialised; extra columns are
    dropped and ``group`` becomes a string. A file lacking a pair column raises a ValueError naming the file and
    the missing columns.
    """
    if max_rows is not None and (not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 1):
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}")
    files = _expand(paths_or_glob)
    rows = {column: [] for column in PAIR_COLUMNS}
    per_file = {}

    def check(columns, path):
        missing = [column for column in PAIR_COLUMNS if column not in columns]
        if missing:
            raise ValueError(f"pair file {path} lacks columns {missing}; a pair file needs {list(PAIR_COLUMNS)}, "
                             f"this one has {sorted(columns)}")

    with progress_bar(total=max_rows, desc="pair files", unit=" rows", disable=not progress) as bar:
        for path in files:
            if max_rows is not None and len(rows["group"]) >= max_rows:
                break
            stream = datasets.load_dataset(_reader(path), data_files=path, split="train", streaming=True)
            if stream.features is not None:  # parquet: the schema is known before any row
                check(stream.features, path)
            taken = 0
            for batch in stream.iter(batch_size=1_000):
                check(batch.keys(), path)
                n = len(batch["group"])
                if max_rows is not None:
                    n = min(n, max_rows - len(rows["group"]))
                rows["group"] += [None if g is None else str(g) for g in batch["group"][:n]]
                for column in PAIR_COLUMNS[1:]:
                    rows[column] += batch[column][:n]
                taken += n
                bar.update(n)
                if max_rows is not None and len(rows["group"]) >= max_rows:
                    break
            per_file[path] = taken
    report = {"source": "pair files", "files": per_file, "rows": len(rows["group"]), "max_rows": max_rows}
    return _table(rows, report)


# --- cache ----------------------------------------------------------------------------------------------


def cached_mmarco_pairs(languages, max_groups: int | None, cache_dir: str | os.PathLike,
                        revision: str = MMARCO_REVISION, base_url: str | os.PathLike | None = None,
                        progress: bool = True, negatives: bool = False) -> datasets.Dataset:
    """:func:`mmarco_pairs`, streamed once and kept as parquet in ``cache_dir/pairs``; later calls read it.

    A sweep's runs share one pair table, so the collections (3-7 GB a language) are streamed once per
    (languages, max_groups, revision, source, negatives), not once per run. Written to a temporary file and renamed
    when complete, so an interrupted stream leaves nothing that looks finished; the stream holds the lock
    ``<name>.lock`` beside it, so runs that start together stream it once (the others wait, then read it).
    """
    from ..cache import file_lock

    codes = sorted(mmarco_language(lang)[0] for lang in languages)
    where = "hub" if base_url is None else hashlib.sha256(str(base_url).encode()).hexdigest()[:8]
    triples = "-negatives" if negatives else ""  # a table with negatives is another table
    name = f"mmarco-{revision[:12]}-{where}-{'-'.join(codes)}-{max_groups or 'all'}{triples}.parquet"
    path = Path(cache_dir) / "pairs" / name
    if path.exists():
        return datasets.Dataset.from_parquet(str(path))
    with file_lock(path.with_name(f".{name}.lock")):
        if path.exists():  # another process streamed it while this one waited
            return datasets.Dataset.from_parquet(str(path))
        pairs = mmarco_pairs(codes, max_groups=max_groups, revision=revision, base_url=base_url, progress=progress,
                             negatives=negatives)
        with atomic_path(path) as partial:
            pairs.to_parquet(str(partial))
    return pairs
