"""The hybrid batch sampler: batches of `mono`, `cross` and `multi` pairs in chosen ratios.

Kinds (docs/architecture.md, "Batch kinds"), for a pair table with columns group, lang, query, passage:

- ``mono``: query and passage in the same language, the whole batch (or the mono part of it) in one language;
- ``cross``: query and passage of the same group in two different languages, languages varying per pair;
- ``multi``: query and passage in the same language, languages varying across the pairs of the batch.

A group appears at most once per batch: two translations of one question in a batch would be false
negatives for each other. Every draw comes from one seeded numpy Generator, so the stream is a pure
function of the seed and ``state_dict()`` / ``load_state_dict()`` resume it exactly.

Hard negatives: a table with a ``negative`` column gives each pair the negative of its passage's row (so it is in
the passage's language). No negative may be a relevant passage of a query in the batch: one whose
``negative_id`` equals a pair's ``passage_id`` (ids say what a text answers, across languages), or without id
columns one whose text equals a pair's passage, is dropped (None) and counted in ``Batch.negative_dropped``.
Dropping draws nothing, so the batches are those of the same table without negatives.

``MultiSourceSampler`` draws each batch from one of several sources (a pair table with a ``source`` column).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..parameters import KINDS, LANGUAGE_WEIGHTS, MIX_MODES


@dataclass
class Batch:
    """One training batch, column-wise: entry i of every list describes pair i.

    ``query_rows`` / ``passage_rows`` are the pair-table rows the texts come from (a sampler fills them);
    ``query_ids`` / ``passage_ids`` their token ids, once attached (``tokens.PairTokens.attach``).
    With hard negatives (empty lists without): ``negatives`` (text or None), ``negative_rows`` (the row whose
    ``negative`` it is, or None), ``negative_ids`` (token ids or None) and ``negative_dropped`` (True where the
    sampler dropped the negative, a relevant passage of a query in the batch). ``sources``: the source of each pair.
    """

    kinds: list[str]
    groups: list[str]
    query_langs: list[str]
    passage_langs: list[str]
    queries: list[str]
    passages: list[str]
    query_rows: list[int] = field(default_factory=list)
    passage_rows: list[int] = field(default_factory=list)
    query_ids: list[list[int]] = field(default_factory=list)
    passage_ids: list[list[int]] = field(default_factory=list)
    negatives: list[str | None] = field(default_factory=list)
    negative_rows: list[int | None] = field(default_factory=list)
    negative_ids: list[list[int] | None] = field(default_factory=list)
    negative_dropped: list[bool] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def source(self) -> str | None:
        """The source the batch was drawn from (one per batch), or None when the sampler has no name."""
        return self.sources[0] if self.sources else None

    @property
    def kind(self) -> str:
        """The batch's kind, or ``"mixed"`` when it holds several."""
        kinds = set(self.kinds)
        return kinds.pop() if len(kinds) == 1 else "mixed"


def validate_ratios(ratios: dict[str, float], prefix: str = "") -> dict[str, float]:
    """Check a kind -> weight mapping and return it complete (missing kinds get 0).

    Errors name each ratio as ``prefix + kind`` (the run parameters call them ``ratio_mono``, ...).
    """
    unknown = sorted(set(ratios) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown batch kinds {unknown} in ratios; the kinds are {list(KINDS)}")
    full = {kind: float(ratios.get(kind, 0.0)) for kind in KINDS}
    for kind, value in full.items():
        if not value >= 0:  # also catches NaN
            raise ValueError(f"{prefix}{kind}={value}: ratios must be non-negative")
    names = [prefix + kind for kind in KINDS]
    total = sum(full.values())
    if total == 0:
        raise ValueError(f"{', '.join(names[:-1])} and {names[-1]} are all 0; give at least one a weight")
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{' + '.join(names)} = {total:.6g} ({full}): they must sum to 1; rescale them")
    return full


def largest_remainder(ratios: dict[str, float], total: int) -> dict[str, int]:
    """Split ``total`` slots among kinds in proportion to ``ratios`` (Hamilton's method, ties by kind order)."""
    exact = {kind: ratios[kind] * total for kind in KINDS}
    counts = {kind: int(np.floor(value)) for kind, value in exact.items()}
    order = sorted(KINDS, key=lambda kind: (-(exact[kind] - counts[kind]), KINDS.index(kind)))
    for kind in order[: total - sum(counts.values())]:
        counts[kind] += 1
    return counts


def _weighted_index(rng: np.random.Generator, weights: np.ndarray) -> int:
    """Index drawn with probability proportional to ``weights`` (one uniform draw; much cheaper than rng.choice)."""
    cumulative = np.cumsum(weights)
    return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(weights) - 1)


class HybridBatchSampler:
    """Endless stream of batches whose kinds follow ``ratios``.

    ``mix="per_batch"``: each batch is one kind, drawn with the ratios as probabilities.
    ``mix="within_batch"``: every batch holds the kinds in the given proportions (largest remainder).
    ``language_weights``: ``"uniform"`` over languages, or ``"size"`` (proportional to pairs per language),
    used to choose mono batch languages and pair languages. ``name``: the source's name, written to ``Batch.sources``.
    """

    def __init__(self, pairs, batch_size: int, ratios: dict[str, float], mix: str = "per_batch",
                 seed: int = 0, language_weights: str = "uniform", name: str | None = None):
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if mix not in MIX_MODES:
            raise ValueError(f"mix must be one of {list(MIX_MODES)}, got {mix!r}")
        if language_weights not in LANGUAGE_WEIGHTS:
            raise ValueError(f"language_weights must be one of {list(LANGUAGE_WEIGHTS)}, got {language_weights!r}")
        self.batch_size = int(batch_size)
        self.ratios = validate_ratios(ratios)
        self.mix = mix
        self.seed = seed
        self.language_weights = language_weights
        self.name = name
        self._index(pairs)
        self._check_feasible()
        self._rng = np.random.default_rng(seed)
        self.batches_drawn = 0

    # -- indexing ------------------------------------------------------------------------------------

    def _index(self, pairs) -> None:
        groups, langs = list(pairs["group"]), list(pairs["lang"])
        self._queries, self._passages = list(pairs["query"]), list(pairs["passage"])
        self._index_negatives(pairs)
        self.group_names = sorted(set(groups))
        self.languages = sorted(set(langs))
        group_id = {name: i for i, name in enumerate(self.group_names)}
        lang_id = {name: i for i, name in enumerate(self.languages)}
        self._row = {}  # (group index, language index) -> row of the pair table
        for row, (group, lang) in enumerate(zip(groups, langs)):
            key = (group_id[group], lang_id[lang])
            if key in self._row:
                raise ValueError(f"pair table has two rows for group {group!r} in language {lang!r}")
            self._row[key] = row
        by_lang = [[] for _ in self.languages]
        langs_of_group = [[] for _ in self.group_names]
        for g, l in sorted(self._row):
            by_lang[l].append(g)
            langs_of_group[g].append(l)
        self._groups_by_lang = [np.array(gs, dtype=np.int64) for gs in by_lang]
        self._langs_of_group = [np.array(ls, dtype=np.int64) for ls in langs_of_group]
        # cross pairs need a query language whose group exists in at least one other language
        self._cross_groups_by_lang = [
            np.array([g for g in gs if len(self._langs_of_group[g]) > 1], dtype=np.int64) for gs in by_lang
        ]
        sizes = np.array([len(gs) for gs in by_lang], dtype=np.float64)
        weights = np.ones_like(sizes) if self.language_weights == "uniform" else sizes
        self._lang_weights = weights / weights.sum()

    def _index_negatives(self, pairs) -> None:
        """Negatives (an empty one is none) and what passages and negatives answer: their ids where the table has
        them, else their texts."""
        columns = pairs.column_names
        self._negatives = [text or None for text in pairs["negative"]] if "negative" in columns else None
        if self._negatives is None:
            return
        by_id = "passage_id" in columns and "negative_id" in columns
        passage_ids = pairs["passage_id"] if by_id else [None] * len(self._passages)
        negative_ids = pairs["negative_id"] if by_id else [None] * len(self._passages)
        self._passage_keys = [text if id_ is None else id_ for id_, text in zip(passage_ids, self._passages)]
        self._negative_keys = [text if id_ is None else id_ for id_, text in zip(negative_ids, self._negatives)]

    def _kind_counts(self) -> list[dict[str, int]]:
        """The per-kind slot counts a batch may have."""
        if self.mix == "within_batch":
            return [largest_remainder(self.ratios, self.batch_size)]
        return [{k: self.batch_size if k == kind else 0 for k in KINDS} for kind in KINDS if self.ratios[kind] > 0]

    def _check_feasible(self) -> None:
        """Fail at construction, not mid-training, when the data cannot fill a batch."""
        if len(self.group_names) < self.batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} exceeds the {len(self.group_names)} groups in the pair table; "
                "a group may appear only once per batch, so lower batch_size or add pairs"
            )
        for counts in self._kind_counts():
            if counts["mono"]:
                sizes = {lang: len(gs) for lang, gs in zip(self.languages, self._groups_by_lang)}
                small = {lang: n for lang, n in sizes.items() if n < counts["mono"]}
                if small:
                    raise ValueError(
                        f"a mono batch needs {counts['mono']} groups of one language, but {small} "
                        f"{'has' if len(small) == 1 else 'have'} fewer (groups per language: {sizes}); drop "
                        f"{'that language' if len(small) == 1 else 'those languages'} (train_languages), or "
                        "lower batch_size or the mono ratio"
                    )
            if counts["mono"] and counts["cross"]:
                need = counts["mono"] + counts["cross"]
                sizes = {lang: len(gs) for lang, gs in zip(self.languages, self._groups_by_lang)}
                if max(sizes.values()) < need:
                    raise ValueError(
                        f"mix='within_batch': after its {counts['cross']} cross pairs a batch needs {counts['mono']} "
                        f"mono pairs from other groups of one language, which only a language with {need} groups "
                        f"guarantees; none has (groups per language: {sizes}). Lower batch_size or the mono or "
                        "cross ratio, add pairs, or use mix='per_batch'"
                    )
            if counts["cross"]:
                n_cross = sum(len(ls) > 1 for ls in self._langs_of_group)
                if n_cross < counts["cross"]:
                    raise ValueError(
                        f"cross pairs need groups present in at least two languages: {counts['cross']} per batch "
                        f"asked, {n_cross} available; lower batch_size or the cross ratio"
                    )

    # -- drawing ------------------------------------------------------------------------------------

    def _draw_lang(self, allowed: np.ndarray) -> int:
        return int(allowed[_weighted_index(self._rng, self._lang_weights[allowed])])

    def _draw_group(self, pool: np.ndarray, used: set[int]) -> int | None:
        """A group from ``pool`` not yet in the batch (rejection first, exact fallback when crowded)."""
        for _ in range(8):
            g = int(pool[self._rng.integers(len(pool))])
            if g not in used:
                return g
        free = np.setdiff1d(pool, np.fromiter(used, dtype=np.int64, count=len(used)))
        return int(free[self._rng.integers(len(free))]) if len(free) else None

    def _mono(self, n: int, used: set[int]) -> list[tuple[int, int, int]]:
        """``n`` pairs in one language: (group, query lang, passage lang).

        The language is drawn among those with ``n`` groups not yet in the batch: all of them in a batch of
        mono pairs only (checked at construction); after the cross part of a within_batch batch, those it
        left enough groups (one always exists, also checked).
        """
        free = np.array([len(gs) for gs in self._groups_by_lang])
        for g in used:
            free[self._langs_of_group[g]] -= 1
        lang = self._draw_lang(np.flatnonzero(free >= n))
        pairs = []
        for _ in range(n):
            g = self._draw_group(self._groups_by_lang[lang], used)
            used.add(g)
            pairs.append((g, lang, lang))
        return pairs

    def _cross(self, n: int, used: set[int]) -> list[tuple[int, int, int]]:
        """``n`` pairs whose query and passage languages differ."""
        pairs = []
        candidates = np.array([l for l, gs in enumerate(self._cross_groups_by_lang) if len(gs)])
        while len(pairs) < n:
            q_lang = self._draw_lang(candidates)
            g = self._draw_group(self._cross_groups_by_lang[q_lang], used)
            if g is None:  # every cross group of this language is already in the batch
                candidates = candidates[candidates != q_lang]
                continue
            others = self._langs_of_group[g]
            p_lang = self._draw_lang(others[others != q_lang])
            used.add(g)
            pairs.append((g, q_lang, p_lang))
        return pairs

    def _multi(self, n: int, used: set[int]) -> list[tuple[int, int, int]]:
        """``n`` same-language pairs, spanning at least two languages whenever the data allows."""
        all_langs = np.arange(len(self.languages))
        langs = [self._draw_lang(all_langs) for _ in range(n)]
        if n > 1 and len(self.languages) > 1 and len(set(langs)) == 1:
            langs[-1] = self._draw_lang(all_langs[all_langs != langs[0]])
        pairs = []
        for lang in langs:
            g = self._draw_group(self._groups_by_lang[lang], used)
            if g is None:  # language exhausted within this batch: take any language with a free group
                free = np.array([l for l, gs in enumerate(self._groups_by_lang) if len(np.setdiff1d(gs, list(used)))])
                lang = self._draw_lang(free)
                g = self._draw_group(self._groups_by_lang[lang], used)
            used.add(g)
            pairs.append((g, lang, lang))
        return pairs

    def next_batch(self) -> Batch:
        if self.mix == "per_batch":
            kind = KINDS[_weighted_index(self._rng, np.array([self.ratios[k] for k in KINDS]))]
            counts = {k: self.batch_size if k == kind else 0 for k in KINDS}
        else:
            counts = largest_remainder(self.ratios, self.batch_size)
        used: set[int] = set()
        drawn: dict[str, list] = {kind: [] for kind in KINDS}
        # the most constrained part first: cross needs groups in two languages, and mono then takes its
        # groups from one language among what is left (multi takes any free group)
        for kind, draw in (("cross", self._cross), ("mono", self._mono), ("multi", self._multi)):
            if counts[kind]:
                drawn[kind] = [(kind, *pair) for pair in draw(counts[kind], used)]
        self.batches_drawn += 1
        return self._to_batch([pair for kind in KINDS for pair in drawn[kind]])

    def _to_batch(self, drawn: list[tuple[str, int, int, int]]) -> Batch:
        batch = Batch([], [], [], [], [], [])
        for kind, g, q_lang, p_lang in drawn:
            query_row, passage_row = self._row[(g, q_lang)], self._row[(g, p_lang)]
            batch.kinds.append(kind)
            batch.groups.append(self.group_names[g])
            batch.query_langs.append(self.languages[q_lang])
            batch.passage_langs.append(self.languages[p_lang])
            batch.query_rows.append(query_row)
            batch.passage_rows.append(passage_row)
            batch.queries.append(self._queries[query_row])
            batch.passages.append(self._passages[passage_row])
        batch.sources = [self.name] * len(batch) if self.name is not None else []
        if self._negatives is not None:
            self._add_negatives(batch)
        return batch

    def _add_negatives(self, batch: Batch) -> None:
        """Each pair's negative (its passage row's), dropped where it answers a query of the batch."""
        answered = {self._passage_keys[row] for row in batch.passage_rows}
        for row in batch.passage_rows:
            negative = self._negatives[row]
            dropped = negative is not None and self._negative_keys[row] in answered
            keep = negative is not None and not dropped
            batch.negatives.append(negative if keep else None)
            batch.negative_rows.append(row if keep else None)
            batch.negative_dropped.append(dropped)

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        return self.next_batch()

    # -- resuming -------------------------------------------------------------------------------------

    def _config(self) -> dict:
        return {"batch_size": self.batch_size, "ratios": self.ratios, "mix": self.mix, "seed": self.seed,
                "language_weights": self.language_weights, "groups": len(self.group_names),
                "pairs": len(self._row), "languages": self.languages}

    def state_dict(self) -> dict:
        """Everything needed to continue the stream exactly (JSON-serialisable)."""
        return {"config": self._config(), "batches_drawn": self.batches_drawn,
                "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if state["config"] != self._config():
            raise ValueError(f"sampler state was saved for {state['config']}, this sampler is {self._config()}")
        self._rng.bit_generator.state = state["rng"]
        self.batches_drawn = state["batches_drawn"]

    def describe(self) -> dict:
        """Languages, groups and pairs per language: what kinds of batch this table can form."""
        return {"languages": self.languages, "groups": len(self.group_names), "pairs": len(self._row),
                "pairs_per_language": dict(zip(self.languages, (len(gs) for gs in self._groups_by_lang))),
                "groups_with_2plus_languages": sum(len(ls) > 1 for ls in self._langs_of_group),
                "languages_per_group": dict(sorted(Counter(len(ls) for ls in self._langs_of_group).items()))}


class MultiSourceSampler:
    """Batches from several sources: each batch's source is drawn with ``weights``, then the batch from it.

    ``pairs`` is one table with a ``source`` column (sources in order of first appearance); each source gets its own
    ``HybridBatchSampler`` (same batch size, ratios and mix; its own seed) over its rows, and batches carry rows of
    the whole table (``Batch.*_rows``), so one ``tokens.PairTokens`` serves them all. ``weights``: ``"size"`` (in
    proportion to each source's pairs, the reference paper's rule) or one positive weight per source.
    """

    def __init__(self, pairs, batch_size: int, ratios: dict[str, float], weights="size", mix: str = "per_batch",
                 seed: int = 0, language_weights: str = "uniform"):
        column = np.asarray(pairs["source"])
        self.names = list(dict.fromkeys(column.tolist()))
        self._rows = {name: np.flatnonzero(column == name) for name in self.names}
        self.samplers = {}
        for i, name in enumerate(self.names):
            own_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])  # independent streams
            try:
                self.samplers[name] = HybridBatchSampler(pairs.select(self._rows[name]), batch_size, ratios, mix,
                                                         own_seed, language_weights, name=name)
            except ValueError as err:
                raise ValueError(f"train source {name!r}: {err}") from None
        sizes = [len(self._rows[name]) for name in self.names]
        self.weights = _source_weights(weights, sizes, self.names)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.batches_drawn = 0

    @property
    def languages(self) -> list[str]:
        return sorted({lang for sampler in self.samplers.values() for lang in sampler.languages})

    def next_batch(self) -> Batch:
        name = self.names[_weighted_index(self._rng, np.array(self.weights))]
        batch = self.samplers[name].next_batch()
        rows = self._rows[name]
        self.batches_drawn += 1
        return dataclasses.replace(  # the source's rows as rows of the whole table
            batch, query_rows=[int(rows[r]) for r in batch.query_rows],
            passage_rows=[int(rows[r]) for r in batch.passage_rows],
            negative_rows=[None if r is None else int(rows[r]) for r in batch.negative_rows])

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        return self.next_batch()

    def _config(self) -> dict:
        return {"sources": self.names, "weights": self.weights, "seed": self.seed}

    def state_dict(self) -> dict:
        return {"config": self._config(), "batches_drawn": self.batches_drawn, "rng": self._rng.bit_generator.state,
                "samplers": {name: sampler.state_dict() for name, sampler in self.samplers.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["config"] != self._config():
            raise ValueError(f"sampler state was saved for {state['config']}, this sampler is {self._config()}")
        for name, sampler in self.samplers.items():
            sampler.load_state_dict(state["samplers"][name])
        self._rng.bit_generator.state = state["rng"]
        self.batches_drawn = state["batches_drawn"]

    def describe(self) -> dict:
        """Per source its weight and ``HybridBatchSampler.describe()``; groups and pairs in all."""
        per_source = {name: {"weight": weight, **sampler.describe()}
                      for (name, sampler), weight in zip(self.samplers.items(), self.weights)}
        return {"sources": per_source, "languages": self.languages,
                "groups": sum(d["groups"] for d in per_source.values()),
                "pairs": sum(d["pairs"] for d in per_source.values())}


def _source_weights(weights, sizes: list[int], names: list[str]) -> list[float]:
    """Probabilities of the sources: ``"size"`` (proportional to ``sizes``) or given weights, checked."""
    if weights == "size":
        return [size / sum(sizes) for size in sizes]
    weights = [float(w) for w in weights]
    if len(weights) != len(names):
        raise ValueError(f"{len(weights)} source weights for the {len(names)} sources {names}; give one per source")
    if not all(w > 0 for w in weights):  # also catches NaN
        raise ValueError(f"source weights {weights} must be positive; drop a source rather than weight it 0")
    return [w / sum(weights) for w in weights]
