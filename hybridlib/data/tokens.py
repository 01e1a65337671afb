"""Token ids of a whole pair table, computed once per run, so that no training step calls the tokenizer.

On a GPU the tokenizer took a quarter to a third of an xlm-roberta-base step. ``PairTokens`` tokenizes every
query and passage of the table once (with the model's prefixes and max lengths) and batches are then collated
from ids (``attach``). The ids are cached as ``.npz`` in ``cache_dir("tokens")``, keyed by the texts, the
tokenizer, the prefixes and the max lengths, so the runs of a sweep tokenize a large table (mMARCO) once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json

import numpy as np

from ..cache import cache_dir, file_lock
from ..records import atomic_path

ROLES = {"query": "query", "passage": "passage", "negative": "negative"}  # pair-table column of each role
ENCODER_ROLE = {"query": "query", "passage": "passage", "negative": "passage"}  # a hard negative is a passage


class PairTokens:
    """Token ids of every row of a pair table: ``ids(rows, role)``; ``attach(batch)`` fills a batch's ids."""

    def __init__(self, flat: dict[str, np.ndarray], offsets: dict[str, np.ndarray]):
        self.flat, self.offsets = flat, offsets  # per role: all ids concatenated, and where each row starts

    def __len__(self) -> int:
        return len(self.offsets["query"]) - 1

    def ids(self, rows, role: str) -> list[list[int]]:
        flat, offsets = self.flat[role], self.offsets[role]
        return [flat[offsets[r] : offsets[r + 1]].tolist() for r in rows]

    def attach(self, batch):
        """The batch with ``query_ids`` / ``passage_ids`` (and ``negative_ids``, None where a pair has no
        negative) from its pair-table rows."""
        negatives = iter(self.ids([r for r in batch.negative_rows if r is not None], "negative"))
        return dataclasses.replace(batch, query_ids=self.ids(batch.query_rows, "query"),
                                   passage_ids=self.ids(batch.passage_rows, "passage"),
                                   negative_ids=[None if r is None else next(negatives) for r in batch.negative_rows])

    @classmethod
    def build(cls, pairs, model, cache: bool = True) -> "PairTokens":
        """Tokenize (or read from the cache) every query and passage (and hard negative) of ``pairs`` for ``model``
        (a BiEncoder). A table without negatives gets an empty negative role (and the key it had before)."""
        texts = {role: [text or "" for text in pairs[column]] for role, column in ROLES.items()
                 if column in pairs.column_names}
        path = cache_dir("tokens", f"{_key(texts, model)}.npz")
        if cache and path.is_file():
            return cls.load(path)
        # concurrent first runs (a parallel sweep, torchrun's ranks) tokenize once: the others wait, then read
        with file_lock(path.with_name(f".{path.name}.lock")) if cache else contextlib.nullcontext():
            if cache and path.is_file():
                return cls.load(path)
            flat, offsets = _no_negatives(len(pairs))
            for role, items in texts.items():
                ids = model.token_ids(items, ENCODER_ROLE[role])
                offsets[role] = np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(np.int64)
                flat[role] = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[role][-1]))
            tokens = cls(flat, offsets)
            if cache:
                tokens.save(path)
        return tokens

    def save(self, path) -> None:
        """Write the ids as ``.npz``, atomically: a reader never sees half a file."""
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # np.savez would append ".npz" to a path
            np.savez(handle, **{f"{r}_flat": self.flat[r] for r in ROLES},
                     **{f"{r}_offsets": self.offsets[r] for r in ROLES})

    @classmethod
    def load(cls, path) -> "PairTokens":
        stored = np.load(path)
        flat, offsets = _no_negatives(len(stored["query_offsets"]) - 1)  # files written before negatives lack them
        flat.update({r: stored[f"{r}_flat"] for r in ROLES if f"{r}_flat" in stored})
        offsets.update({r: stored[f"{r}_offsets"] for r in ROLES if f"{r}_offsets" in stored})
        return cls(flat, offsets)


def _no_negatives(rows: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """An empty negative role for ``rows`` rows (every row: no ids)."""
    return {"negative": np.zeros(0, dtype=np.int32)}, {"negative": np.zeros(rows + 1, dtype=np.int64)}


def _key(texts: dict[str, list[str]], model) -> str:
    """What the ids depend on: the texts, the tokenizer (its whole definition), prefixes and max lengths."""
    digest = hashlib.sha256()
    backend = getattr(model.tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        for state in ("truncation", "padding"):  # set by the last call, not part of what the ids mean
            definition.pop(state, None)
        digest.update(json.dumps(definition, sort_keys=True).encode())
    else:
        digest.update(repr(model.tokenizer).encode())
    for role, items in texts.items():
        encoder_role = ENCODER_ROLE[role]
        digest.update(f"\x00{role}\x00{model.prefix(encoder_role)}\x00{model.max_length(encoder_role)}\x00".encode())
        for text in items:
            digest.update(text.encode("utf-8", "surrogatepass") + b"\x1f")
    return digest.hexdigest()[:32]
