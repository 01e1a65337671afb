"""MIRACL dev (monolingual retrieval; the reference paper's appendix) read from the hub's raw files
(docs/architecture.md, "Where new things go": a new evaluation task).

``miracl/miracl`` and ``miracl/miracl-corpus`` are loading-script repositories that ``datasets`` 4+ no longer runs,
and the hub's parquet conversion of the corpus is truncated for the large languages, so the raw files are read:

- corpus: ``miracl-corpus-v1.0-{lang}/docs-*.jsonl.gz`` of ``miracl/miracl-corpus`` (``docid`` "article#passage",
  ``title``, ``text``), streamed with ``datasets.load_dataset("json", streaming=True)``, shards in numeric order;
- topics: ``miracl-v1.0-{lang}/topics/topics.miracl-v1.0-{lang}-dev.tsv`` of ``miracl/miracl`` (``qid \\t query``);
- qrels: ``miracl-v1.0-{lang}/qrels/qrels.miracl-v1.0-{lang}-dev.tsv`` (TREC ``qid Q0 docid rel``), rel-0 rows kept.

A passage's text is ``f"{title} {text}"`` (just ``text`` when the title is empty), the usual MIRACL dense-retrieval
input. A docid seen again (the Korean corpus repeats some) is dropped, the first one kept, and counted.

A local copy with the hub's layout (``<dir>/miracl/...`` and ``<dir>/miracl-corpus/...``), given as ``base_dir`` or
``$HYBRIDLIB_MIRACL_DIR``, replaces the hub: then nothing touches the network. The parsed corpus is kept in
``cache_dir("miracl")`` (a zstd parquet of ``docid``, ``text`` and a JSON beside it with the topics, qrels and counts),
so a language is streamed once per source and corpus size.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..cache import cache_dir, file_lock
from ..progress import progress_bar
from ..records import atomic_path, write_atomic
from .pinned import MIRACL_LANGUAGES, MIRACL_PAPER_LANGUAGES

MIRACL_REPO = "miracl/miracl"  # topics and qrels
MIRACL_CORPUS_REPO = "miracl/miracl-corpus"
MIRACL_REVISION = "main"  # the branch, not a commit: no commit hash was pinned (the cache is keyed by it all the same)
MIRACL_CORPUS_REVISION = "main"  # the branch, not a commit (as above)
MIRACL_DIR_ENV = "HYBRIDLIB_MIRACL_DIR"

PAPER_LANGUAGES = MIRACL_PAPER_LANGUAGES  # the paper's 15
SMALL_LANGUAGES = ("sw", "bn", "hi", "te", "th")  # small corpora: the full corpus fits a laptop
__all__ = ["MIRACL_LANGUAGES", "PAPER_LANGUAGES", "SMALL_LANGUAGES", "MiraclData", "MiraclUnavailable", "load_miracl",
           "read_topics", "read_qrels", "corpus_files", "miracl_dir"]

TOPICS_FILE = "miracl-v1.0-{lang}/topics/topics.miracl-v1.0-{lang}-dev.tsv"
QRELS_FILE = "miracl-v1.0-{lang}/qrels/qrels.miracl-v1.0-{lang}-dev.tsv"
CORPUS_GLOB = "miracl-corpus-v1.0-{lang}/docs-*.jsonl.gz"
_SHARD = re.compile(r"docs-(\d+)\.jsonl\.gz$")
_BATCH = 10_000  # corpus rows per streamed Arrow batch


class MiraclUnavailable(RuntimeError):
    """MIRACL cannot be read here (no network, a gated repository, a local copy lacking a file); one-line message."""


@dataclass
class MiraclData:
    """One language of MIRACL dev. The corpus stays on disk (``corpus_path``, parquet ``docid``, ``text``): read it
    whole with ``corpus_ids`` / ``corpus_texts`` or in bounded pieces with ``iter_corpus``."""

    lang: str
    topics: dict[str, str]  # qid -> query
    qrels: dict[str, dict[str, int]]  # qid -> {docid: rel}, rel-0 rows kept
    corpus_path: Path
    passages: int
    duplicates_removed: int  # rows dropped because their docid was already kept (reduced: among the kept only)
    reduced: bool  # True: judged passages + the first max_passages (NOT comparable with the paper)
    max_passages: int | None
    source: str  # "miracl/miracl-corpus@main" or the local copy's folder
    missing_judged: int = 0  # judged docids the corpus does not hold

    @property
    def key(self) -> str:
        """What identifies this corpus: the embeddings of one model on it can be cached under this name."""
        return self.corpus_path.stem

    @cached_property
    def corpus_ids(self) -> list[str]:
        import pyarrow.parquet as pq

        return pq.read_table(self.corpus_path, columns=["docid"])["docid"].to_pylist()

    @property
    def corpus_texts(self) -> list[str]:
        import pyarrow.parquet as pq

        return pq.read_table(self.corpus_path, columns=["text"])["text"].to_pylist()

    def iter_corpus(self, chunk: int):
        """``(start row, docids, texts)`` of ``chunk`` passages at a time, in corpus order (read lazily)."""
        import pyarrow.parquet as pq

        start, ids, texts = 0, [], []
        for batch in pq.ParquetFile(self.corpus_path).iter_batches(batch_size=chunk, columns=["docid", "text"]):
            ids += batch.column(0).to_pylist()
            texts += batch.column(1).to_pylist()
            while len(ids) >= chunk:  # batches end at row groups: regroup into exactly ``chunk`` rows
                yield start, ids[:chunk], texts[:chunk]
                start, ids, texts = start + chunk, ids[chunk:], texts[chunk:]
        if ids:
            yield start, ids, texts


def miracl_dir(base_dir: str | os.PathLike | None = None) -> Path | None:
    """The local copy to read: ``base_dir``, else ``$HYBRIDLIB_MIRACL_DIR``, else None (the hub)."""
    chosen = base_dir if base_dir is not None else os.environ.get(MIRACL_DIR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser().resolve()
    if not (path / "miracl").is_dir() or not (path / "miracl-corpus").is_dir():
        raise MiraclUnavailable(f"{path} is not a MIRACL copy: it needs the folders miracl/ and miracl-corpus/ with "
                                f"the hub's layout inside ({MIRACL_DIR_ENV} or base_dir)")
    return path


# --- errors ---------------------------------------------------------------------------------------------

def _offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return value in ("1", "ON", "YES", "TRUE") or bool(constants.HF_HUB_OFFLINE)


def _no_network(repo: str, why: str = "") -> MiraclUnavailable:
    return MiraclUnavailable(
        f"MIRACL: the Hugging Face hub could not be reached for the dataset {repo}{f' ({why})' if why else ''}; "
        f"set {MIRACL_DIR_ENV} to a local copy holding miracl/ and miracl-corpus/ with the hub's layout "
        "(or allow network access and unset HF_HUB_OFFLINE)")


def _gated(repo: str, why: str) -> MiraclUnavailable:
    return MiraclUnavailable(
        f"MIRACL: the hub refused the dataset {repo} ({why}); accept its terms on https://huggingface.co/datasets/"
        f"{repo}, then run `huggingface-cli login` (or set HF_TOKEN)")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The connection errors of the HTTP clients huggingface_hub may use (whichever are installed)."""
    found: list[type[BaseException]] = [OSError]  # ConnectionError, fsspec's and huggingface_hub's errors are OSErrors
    for module, name in (("httpx", "TransportError"), ("httpx2", "TransportError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def _hub_error(repo: str, err: BaseException) -> MiraclUnavailable:
    """The one-line ``MiraclUnavailable`` for an exception raised while reading ``repo`` from the hub."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if isinstance(err, GatedRepoError):
        return _gated(repo, "gated repository")
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, HfHubHTTPError) and status in (401, 403):
        return _gated(repo, f"HTTP {status}")
    if isinstance(err, RepositoryNotFoundError):
        return _gated(repo, "not found: private, gated or not visible without a login")
    return _no_network(repo, f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}")


# --- topics, qrels, corpus files --------------------------------------------------------------------------

def _repo_file(repo: str, revision: str, filename: str, base: Path | None) -> Path:
    """A file of ``repo``: from the local copy, else downloaded (huggingface_hub's cache; offline: cache only)."""
    if base is not None:
        path = base / repo.split("/")[1] / filename
        if not path.is_file():
            raise MiraclUnavailable(f"MIRACL: the local copy {base} lacks {path.relative_to(base)} ({MIRACL_DIR_ENV})")
        return path
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, repo_type="dataset", revision=revision,
                                    local_files_only=_offline()))
    except _transport_errors() as err:
        raise _hub_error(repo, err) from err


def read_topics(lang: str, base_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """``{qid: query}`` of the dev topics, in file order."""
    path = _repo_file(MIRACL_REPO, MIRACL_REVISION, TOPICS_FILE.format(lang=lang), miracl_dir(base_dir))
    topics = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            qid, _, query = line.partition("\t")
            topics[qid.strip()] = query.strip()
    return topics


def read_qrels(lang: str, base_dir: str | os.PathLike | None = None) -> dict[str, dict[str, int]]:
    """``{qid: {docid: rel}}`` of the dev qrels (TREC ``qid Q0 docid rel``), rel-0 rows kept, in file order."""
    path = _repo_file(MIRACL_REPO, MIRACL_REVISION, QRELS_FILE.format(lang=lang), miracl_dir(base_dir))
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise ValueError(f"{path}, line {n}: expected 'qid Q0 docid rel', got {line[:80]!r}")
        qrels.setdefault(fields[0], {})[fields[2]] = int(fields[3])
    return qrels


def corpus_files(lang: str, base_dir: str | os.PathLike | None = None) -> list[str]:
    """The corpus shards of ``lang`` in numeric order (docs-2 before docs-10): local paths or ``hf://`` URLs."""
    base = miracl_dir(base_dir)
    pattern = CORPUS_GLOB.format(lang=lang)
    if base is not None:
        paths = [str(p) for p in (base / "miracl-corpus").glob(pattern)]
        where = f"the local copy {base}"
    else:
        if _offline():
            raise _no_network(MIRACL_CORPUS_REPO, "HF_HUB_OFFLINE is set")
        from huggingface_hub import HfFileSystem

        root = f"datasets/{MIRACL_CORPUS_REPO}@{MIRACL_CORPUS_REVISION}"
        try:
            paths = [f"hf://{p}" for p in HfFileSystem().glob(f"{root}/{pattern}")]
        except _transport_errors() as err:
            raise _hub_error(MIRACL_CORPUS_REPO, err) from err
        where = f"{MIRACL_CORPUS_REPO}@{MIRACL_CORPUS_REVISION}"
    if not paths:
        raise MiraclUnavailable(f"MIRACL: no corpus files {pattern} in {where} (is {lang!r} a MIRACL language?)")
    return sorted(paths, key=lambda p: int(_SHARD.search(p).group(1)))


# --- the corpus ---------------------------------------------------------------------------------------

def load_miracl(lang: str, max_passages: int | None = None, base_dir: str | os.PathLike | None = None,
                progress: bool = True) -> MiraclData:
    """MIRACL dev for ``lang``: topics, qrels and the corpus (parsed once into ``cache_dir("miracl")``).

    ``max_passages=None``: the full corpus. An int N: a reduced corpus, every judged passage of the dev topics
    (rel 0 too) plus the first N distinct passages in corpus order; the stream stops once both are in hand. Scores on
    it are NOT comparable with the paper's. Raises ``MiraclUnavailable`` (one line) when the hub cannot be read.
    """
    if lang not in MIRACL_LANGUAGES:
        raise ValueError(f"MIRACL has no dev split for {lang!r}; choose from {list(MIRACL_LANGUAGES)}")
    if max_passages is not None and (isinstance(max_passages, bool) or not isinstance(max_passages, int)
                                     or max_passages < 0):
        raise ValueError(f"max_passages must be None or an int >= 0, got {max_passages!r}")
    base = miracl_dir(base_dir)
    source = (f"{MIRACL_CORPUS_REPO}@{MIRACL_CORPUS_REVISION}" if base is None else str(base))
    where = (f"hub-{MIRACL_CORPUS_REVISION}-{MIRACL_REVISION}" if base is None
             else "dir-" + hashlib.sha256(str(base).encode()).hexdigest()[:10])
    name = f"{lang}-{where}-{'full' if max_passages is None else f'first{max_passages}'}"
    path = cache_dir("miracl") / f"{name}.parquet"
    if not _complete(path):
        with file_lock(path.with_name(f".{name}.lock")):  # runs that start together stream it once
            if not _complete(path):
                _build(lang, max_passages, base, path, progress)
    info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    return MiraclData(lang=lang, topics=info["topics"], qrels=info["qrels"], corpus_path=path,
                      passages=info["passages"], duplicates_removed=info["duplicates_removed"],
                      reduced=max_passages is not None, max_passages=max_passages, source=source,
                      missing_judged=info["missing_judged"])


def _complete(path: Path) -> bool:
    return path.is_file() and path.with_suffix(".json").is_file()  # the JSON is written last


def _build(lang: str, max_passages: int | None, base: Path | None, path: Path, progress: bool) -> None:
    """Stream the corpus into ``path`` (parquet, atomically), then the JSON beside it that marks it complete."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    topics, qrels = read_topics(lang, base), read_qrels(lang, base)
    judged = {docid for docs in qrels.values() for docid in docs}
    files = corpus_files(lang, base)
    features = datasets.Features({k: datasets.Value("string") for k in ("docid", "title", "text")})
    schema = pa.schema([("docid", pa.string()), ("text", pa.string())])
    kept: set[str] = set()
    seen = duplicates = 0  # seen: distinct passages met so far, in corpus order (the reduced corpus' first N)
    try:
        stream = datasets.load_dataset("json", data_files=files, split="train", streaming=True, features=features)
        with atomic_path(path) as partial, pq.ParquetWriter(partial, schema, compression="zstd") as writer, \
                progress_bar(desc=f"MIRACL {lang} corpus", unit=" passages", unit_scale=True,
                             disable=not progress, leave=False) as bar:
            for table in stream.with_format("arrow").iter(batch_size=_BATCH):
                ids, texts = [], []
                for docid, title, text in zip(*(table[c].to_pylist() for c in ("docid", "title", "text"))):
                    if docid in kept:
                        duplicates += 1
                        continue
                    seen += 1
                    if max_passages is None or seen <= max_passages or docid in judged:
                        kept.add(docid)
                        ids.append(docid)
                        texts.append(f"{title} {text}" if title else (text or ""))
                if ids:
                    writer.write_table(pa.table({"docid": ids, "text": texts}, schema=schema))
                bar.update(table.num_rows)
                if max_passages is not None and seen >= max_passages and judged <= kept:
                    break  # a reduced corpus needs nothing further
    except MiraclUnavailable:
        raise
    except _transport_errors() as err:
        if base is not None:
            raise MiraclUnavailable(f"MIRACL: the local copy {base} cannot be read ({type(err).__name__}: "
                                    f"{str(err)[:160]})") from err
        raise _hub_error(MIRACL_CORPUS_REPO, err) from err
    info = {"lang": lang, "passages": len(kept), "duplicates_removed": duplicates,
            "missing_judged": len(judged - kept), "max_passages": max_passages, "files": len(files),
            "topics": topics, "qrels": qrels}
    write_atomic(path.with_suffix(".json"), json.dumps(info, ensure_ascii=False))
