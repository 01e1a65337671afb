"""The hybrid batch sampler: batches of `mono`, `cross` and `multi` pairs in chosen ratios.

Kinds (DESIGN.md section 1), for a pair table with columns group, lang, query, passage:

- ``mono``: query and passage in the same language, the whole batch (or the mono part of it) in one language;
- ``cross``: query and passage of the same group in two different languages, languages varying per pair;
- ``multi``: query and passage in the same language, languages varying across the pairs of the batch.

A group appears at most once per batch: two translations of one question in a batch would be false
negatives for each other. Every draw comes from one seeded numpy Generator, so the stream is a pure
function of the seed and ``state_dict()`` / ``load_state_dict()`` resume it exactly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

KINDS = ("mono", "cross", "multi")
MIX_MODES = ("per_batch", "within_batch")
LANGUAGE_WEIGHTS = ("uniform", "size")


@dataclass
class Batch:
    """One training batch, column-wise: entry i of every list describes pair i."""

    kinds: list[str]
    groups: list[str]
    query_langs: list[str]
    passage_langs: list[str]
    queries: list[str]
    passages: list[str]

    def __len__(self) -> int:
        return len(self.queries)

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
    used to choose mono batch languages and pair languages.
    """

    def __init__(self, pairs, batch_size: int, ratios: dict[str, float], mix: str = "per_batch",
                 seed: int = 0, language_weights: str = "uniform"):
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
        self._index(pairs)
        self._check_feasible()
        self._rng = np.random.default_rng(seed)
        self.batches_drawn = 0

    # -- indexing ------------------------------------------------------------------------------------

    def _index(self, pairs) -> None:
        groups, langs = list(pairs["group"]), list(pairs["lang"])
        self._queries, self._passages = list(pairs["query"]), list(pairs["passage"])
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
            batch.kinds.append(kind)
            batch.groups.append(self.group_names[g])
            batch.query_langs.append(self.languages[q_lang])
            batch.passage_langs.append(self.languages[p_lang])
            batch.queries.append(self._queries[self._row[(g, q_lang)]])
            batch.passages.append(self._passages[self._row[(g, p_lang)]])
        return batch

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
