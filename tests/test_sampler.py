import json
from collections import Counter

import numpy as np
import pytest

from hybridlib.parameters import KINDS
from hybridlib.data.sampler import HybridBatchSampler, largest_remainder

BATCH = 32


def check_batch(batch, pair_lookup, n_languages):
    """Every constraint a batch must satisfy, whatever the ratios."""
    assert len(batch) == BATCH
    assert len(set(batch.groups)) == len(batch.groups), "a group appears twice"
    for kind, group, ql, pl, q, p in zip(batch.kinds, batch.groups, batch.query_langs, batch.passage_langs,
                                         batch.queries, batch.passages):
        assert pair_lookup[(group, ql)][0] == q and pair_lookup[(group, pl)][1] == p
        if kind == "cross":
            assert ql != pl
        else:
            assert ql == pl
    mono_langs = {ql for k, ql in zip(batch.kinds, batch.query_langs) if k == "mono"}
    assert len(mono_langs) <= 1, "the mono part spans several languages"
    multi_langs = [ql for k, ql in zip(batch.kinds, batch.query_langs) if k == "multi"]
    if len(multi_langs) > 1 and n_languages > 1:
        assert len(set(multi_langs)) >= 2, "a multi batch in one language"


@pytest.fixture(scope="module")
def lookup(mlqa_pairs):
    return {(g, l): (q, p) for g, l, q, p in zip(*(mlqa_pairs[c] for c in ("group", "lang", "query", "passage")))}


@pytest.mark.parametrize("ratios", [
    {"mono": 0.5, "cross": 0.5, "multi": 0.0},
    {"mono": 0.2, "cross": 0.3, "multi": 0.5},
    {"mono": 1 / 3, "cross": 1 / 3, "multi": 1 / 3},
])
def test_per_batch_kind_frequencies_match_ratios(mlqa_pairs, lookup, ratios):
    n = 2000
    sampler = HybridBatchSampler(mlqa_pairs, BATCH, ratios, seed=7)
    batches = [next(sampler) for _ in range(n)]
    counts = Counter(b.kind for b in batches)
    assert set(counts) <= {k for k in KINDS if ratios[k] > 0}
    for kind in KINDS:
        p = ratios[kind]
        standard_error = np.sqrt(p * (1 - p) / n)
        assert abs(counts[kind] / n - p) <= 3 * standard_error + 1e-12, (kind, counts)
    for batch in batches:
        check_batch(batch, lookup, len(sampler.languages))


def test_within_batch_proportions_and_constraints(mlqa_pairs, lookup):
    ratios = {"mono": 0.3, "cross": 0.3, "multi": 0.4}
    sampler = HybridBatchSampler(mlqa_pairs, BATCH, ratios, mix="within_batch", seed=3)
    expected = largest_remainder(ratios, BATCH)
    assert expected == {"mono": 10, "cross": 9, "multi": 13}
    for _ in range(2000):
        batch = next(sampler)
        assert Counter(batch.kinds) == expected and batch.kind == "mixed"
        check_batch(batch, lookup, len(sampler.languages))


def test_largest_remainder_hand_cases():
    assert largest_remainder({"mono": 0.5, "cross": 0.5, "multi": 0.0}, 7) == {"mono": 4, "cross": 3, "multi": 0}
    assert largest_remainder({"mono": 1 / 3, "cross": 1 / 3, "multi": 1 / 3}, 100) == {"mono": 34, "cross": 33, "multi": 33}
    assert largest_remainder({"mono": 0.0, "cross": 1.0, "multi": 0.0}, 5) == {"mono": 0, "cross": 5, "multi": 0}


def test_language_weights_uniform_vs_size(mlqa_pairs):
    """MLQA-R has 1148 English pairs and ~500 in each other language: 'size' favours English."""
    def english_share(weights):
        sampler = HybridBatchSampler(mlqa_pairs, BATCH, {"multi": 1.0}, seed=0, language_weights=weights)
        langs = [l for _ in range(300) for l in next(sampler).query_langs]
        return langs.count("en") / len(langs)
    assert abs(english_share("uniform") - 1 / 7) < 0.03
    assert abs(english_share("size") - 1148 / 4199) < 0.03


def test_mono_batches_use_each_language(mlqa_pairs):
    sampler = HybridBatchSampler(mlqa_pairs, BATCH, {"mono": 1.0}, seed=0)
    langs = Counter(next(sampler).query_langs[0] for _ in range(700))
    assert set(langs) == set(sampler.languages) and min(langs.values()) > 60


def test_same_seed_same_stream_other_seed_differs(mlqa_pairs):
    ratios = {"mono": 0.4, "cross": 0.4, "multi": 0.2}
    a = HybridBatchSampler(mlqa_pairs, BATCH, ratios, seed=11)
    b = HybridBatchSampler(mlqa_pairs, BATCH, ratios, seed=11)
    c = HybridBatchSampler(mlqa_pairs, BATCH, ratios, seed=12)
    first = [next(a) for _ in range(50)]
    assert first == [next(b) for _ in range(50)]
    assert first != [next(c) for _ in range(50)]


@pytest.mark.parametrize("mix", ["per_batch", "within_batch"])
def test_resume_yields_the_same_batches(mlqa_pairs, mix):
    ratios = {"mono": 0.3, "cross": 0.5, "multi": 0.2}
    uninterrupted = HybridBatchSampler(mlqa_pairs, BATCH, ratios, mix=mix, seed=5)
    expected = [next(uninterrupted) for _ in range(120)]

    first = HybridBatchSampler(mlqa_pairs, BATCH, ratios, mix=mix, seed=5)
    got = [next(first) for _ in range(45)]
    state = json.loads(json.dumps(first.state_dict()))  # must survive a trip through a checkpoint file
    resumed = HybridBatchSampler(mlqa_pairs, BATCH, ratios, mix=mix, seed=5)
    resumed.load_state_dict(state)
    assert resumed.batches_drawn == 45
    got += [next(resumed) for _ in range(75)]
    assert got == expected


def test_state_from_another_configuration_is_refused(mlqa_pairs):
    state = HybridBatchSampler(mlqa_pairs, BATCH, {"mono": 1.0}, seed=5).state_dict()
    other = HybridBatchSampler(mlqa_pairs, BATCH, {"cross": 1.0}, seed=5)
    with pytest.raises(ValueError, match="sampler state was saved for"):
        other.load_state_dict(state)


@pytest.mark.parametrize("kwargs, message", [
    ({"ratios": {"mono": 0.5, "cross": 0.6}}, "must sum to 1"),
    ({"ratios": {"mono": -0.5, "cross": 1.5}}, "non-negative"),
    ({"ratios": {"mono": 0.5, "crosss": 0.5}}, r"unknown batch kinds \['crosss'\]"),
    ({"ratios": {"mono": 1.0}, "mix": "per-batch"}, "mix must be one of"),
    ({"ratios": {"mono": 1.0}, "language_weights": "sized"}, "language_weights must be one of"),
    ({"ratios": {"mono": 1.0}, "batch_size": 0}, "batch_size must be a positive integer"),
    ({"ratios": {"multi": 1.0}, "batch_size": 5000}, "exceeds the 1148 groups"),
    ({"ratios": {"mono": 1.0}, "batch_size": 1149}, "exceeds"),
])
def test_bad_arguments_are_clear_errors(mlqa_pairs, kwargs, message):
    kwargs = {"batch_size": BATCH, **kwargs}
    with pytest.raises(ValueError, match=message):
        HybridBatchSampler(mlqa_pairs, **kwargs)


def test_mono_infeasible_when_no_language_is_large_enough(mlqa_pairs):
    non_english = mlqa_pairs.filter(lambda row: row["lang"] != "en")  # largest language: 517 groups
    with pytest.raises(ValueError, match=r"a mono batch needs 600 groups of one language, but \{'ar': 517"):
        HybridBatchSampler(non_english, 600, {"mono": 1.0})
    HybridBatchSampler(non_english, 600, {"multi": 1.0})  # fine: multi mixes languages


def test_mono_refuses_any_language_smaller_than_the_batch(mlqa_pairs):
    """es has 500 MLQA-R groups (the next smallest, zh, 504): a mono ratio with batch 502 must name it, not silently skip it."""
    with pytest.raises(ValueError, match=r"\{'es': 500\} has fewer.*drop that language \(train_languages\)"):
        HybridBatchSampler(mlqa_pairs, 502, {"mono": 0.5, "cross": 0.5})
    with pytest.raises(ValueError, match="'es': 500"):  # also when mono is only part of each batch
        HybridBatchSampler(mlqa_pairs, 1010, {"mono": 0.5, "cross": 0.5}, mix="within_batch")


def test_cross_needs_multilingual_groups(mlqa_pairs):
    english = mlqa_pairs.filter(lambda row: row["lang"] == "en")
    with pytest.raises(ValueError, match="cross pairs need groups present in at least two languages"):
        HybridBatchSampler(english, BATCH, {"cross": 1.0})


def test_duplicate_pair_rows_are_refused(mlqa_pairs):
    from datasets import concatenate_datasets
    doubled = concatenate_datasets([mlqa_pairs.select(range(10)), mlqa_pairs.select(range(1))])
    with pytest.raises(ValueError, match="two rows for group"):
        HybridBatchSampler(doubled, 2, {"multi": 1.0})


def _en_de_table(both: int, english_only: int, german_only: int = 0):
    """A pair table of ``both`` groups in en and de, then ``english_only`` and ``german_only`` groups."""
    import datasets

    rows = [(f"b{i}", lang) for i in range(both) for lang in ("en", "de")]
    rows += [(f"e{i}", "en") for i in range(english_only)] + [(f"d{i}", "de") for i in range(german_only)]
    return datasets.Dataset.from_dict({"group": [g for g, _ in rows], "lang": [lang for _, lang in rows],
                                       "query": [f"q {g} {lang}" for g, lang in rows],
                                       "passage": [f"p {g} {lang}" for g, lang in rows]})


def test_within_batch_mono_and_cross_draw_when_mono_could_use_up_the_cross_groups():
    """10 groups, 6 in en+de and 4 in en only, batch 10, mono 0.5 / cross 0.5: the cross part needs 5 of the 6
    two-language groups, so the mono part must come from what is left (en). Used to raise IndexError."""
    sampler = HybridBatchSampler(_en_de_table(6, 4), 10, {"mono": 0.5, "cross": 0.5}, mix="within_batch", seed=0)
    for _ in range(300):
        batch = next(sampler)
        assert len(set(batch.groups)) == 10 and batch.kinds == ["mono"] * 5 + ["cross"] * 5
        mono = [i for i, kind in enumerate(batch.kinds) if kind == "mono"]
        assert {batch.query_langs[i] for i in mono} == {batch.passage_langs[i] for i in mono} == {"en"}
        assert all(batch.query_langs[i] != batch.passage_langs[i] for i in range(5, 10))


def test_within_batch_mono_and_cross_infeasible_fails_at_construction():
    """8 groups in en, 8 in de, 6 of them in both: after 5 cross pairs no language is sure to have 5 more."""
    with pytest.raises(ValueError, match=r"within_batch.*5 mono pairs.*a language with 10 groups.*'de': 8, 'en': 8"
                                         r".*mix='per_batch'"):
        HybridBatchSampler(_en_de_table(6, 2, 2), 10, {"mono": 0.5, "cross": 0.5}, mix="within_batch")
