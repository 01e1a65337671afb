"""Several train sources: a batch's source drawn by size (the paper's rule) or by given weights, one source per
batch, rows of the whole table, exact resume; one source keeps the batches it always had."""

import copy
import json

import numpy as np
import pandas as pd
import pytest

from hybridlib.runs import experiment
from hybridlib.runs.config import ParameterError, resolve_params
from hybridlib.data.benchmarks import pairs_from_benchmark
from hybridlib.models.bi_encoder import tiny_model
from hybridlib.data.sampler import HybridBatchSampler, MultiSourceSampler
from hybridlib.training.loop import train

BATCH = 16
RATIOS = {"mono": 0.5, "cross": 0.5}


@pytest.fixture(scope="module")
def two_sources(mlqa_pairs, xquad):
    """MLQA-R (4,199 pairs) and XQuAD-R (13,090) as two sources of one table, as training_pairs builds it."""
    return experiment._concatenate_sources({"mlqa-r": mlqa_pairs, "xquad-r": pairs_from_benchmark(xquad)})


@pytest.mark.slow
def test_batches_come_from_one_source_in_proportion_to_its_size(two_sources):
    sampler = MultiSourceSampler(two_sources, BATCH, RATIOS, seed=0)
    sizes = {"mlqa-r": 4199, "xquad-r": 13090}
    assert sampler.weights == pytest.approx([4199 / 17289, 13090 / 17289])
    source_of = two_sources["source"]
    texts = {column: two_sources[column] for column in ("query", "passage", "group")}
    n, counts = 1500, {"mlqa-r": 0, "xquad-r": 0}
    for _ in range(n):
        batch = next(sampler)
        counts[batch.source] += 1
        assert set(batch.sources) == {batch.source} and len(set(batch.groups)) == BATCH
        for q_row, p_row, group, query, passage in zip(batch.query_rows, batch.passage_rows, batch.groups,
                                                       batch.queries, batch.passages):
            # rows of the whole table: one PairTokens over it serves every source
            assert source_of[q_row] == source_of[p_row] == batch.source
            assert (texts["query"][q_row], texts["passage"][p_row], texts["group"][q_row]) == (query, passage, group)
    for name, size in sizes.items():
        p = size / sum(sizes.values())
        assert abs(counts[name] / n - p) <= 3 * np.sqrt(p * (1 - p) / n), counts


def test_explicit_weights_and_their_errors(two_sources):
    sampler = MultiSourceSampler(two_sources, BATCH, RATIOS, weights=[0.8, 0.2], seed=1)
    n = 1000
    share = sum(next(sampler).source == "mlqa-r" for _ in range(n)) / n
    assert abs(share - 0.8) <= 3 * np.sqrt(0.8 * 0.2 / n)
    with pytest.raises(ValueError, match=r"3 source weights for the 2 sources \['mlqa-r', 'xquad-r'\]"):
        MultiSourceSampler(two_sources, BATCH, RATIOS, weights=[0.5, 0.3, 0.2])
    with pytest.raises(ValueError, match="must be positive"):
        MultiSourceSampler(two_sources, BATCH, RATIOS, weights=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"train source 'mlqa-r': batch_size 2000 exceeds the 1148 groups"):
        MultiSourceSampler(two_sources, 2000, RATIOS)


def test_resume_is_exact(two_sources):
    expected = [next(s) for s in [MultiSourceSampler(two_sources, BATCH, RATIOS, seed=4)] for _ in range(60)]
    first = MultiSourceSampler(two_sources, BATCH, RATIOS, seed=4)
    got = [next(first) for _ in range(25)]
    state = json.loads(json.dumps(first.state_dict()))  # through a checkpoint file
    resumed = MultiSourceSampler(two_sources, BATCH, RATIOS, seed=4)
    resumed.load_state_dict(state)
    got += [next(resumed) for _ in range(35)]
    assert got == expected
    with pytest.raises(ValueError, match="sampler state was saved for"):
        MultiSourceSampler(two_sources, BATCH, RATIOS, weights=[0.5, 0.5], seed=4).load_state_dict(state)
    assert MultiSourceSampler(two_sources, BATCH, RATIOS, seed=5).next_batch() != expected[0]


def test_one_train_source_keeps_its_batches(mlqa_pairs):
    """A single train_source (also a list of one) gives the HybridBatchSampler batches runs always had."""
    for source in ("mlqa-r", ["mlqa-r"]):
        params = resolve_params({"train_source": source, "batch_size": BATCH, "seed": 2}, apply_env=False)
        assert params["train_source"] == "mlqa-r"
        sampler = experiment.make_sampler(params, experiment.training_pairs(params))
        before = HybridBatchSampler(mlqa_pairs, BATCH, {"mono": 0.5, "cross": 0.5, "multi": 0.0}, seed=2)
        for _ in range(30):
            batch, old = next(sampler), next(before)
            assert batch.sources == ["mlqa-r"] * BATCH and old.sources == []
            assert batch.negatives == [] and batch.negative_dropped == []
            assert (batch.groups, batch.kinds, batch.query_rows, batch.passage_rows) == (
                old.groups, old.kinds, old.query_rows, old.passage_rows)


def test_training_pairs_from_a_benchmark_and_a_pair_file(tmp_path):
    frame = pd.DataFrame({"group": [f"g{i}" for i in range(20) for _ in (0, 1)], "lang": ["en", "de"] * 20,
                          "query": [f"q{i}{lang}" for i in range(20) for lang in ("en", "de")],
                          "passage": [f"p{i}{lang}" for i in range(20) for lang in ("en", "de")],
                          "negative": [f"n{i}{lang}" for i in range(20) for lang in ("en", "de")]})
    path = tmp_path / "pairs.jsonl"
    frame.to_json(path, orient="records", lines=True)
    params = resolve_params({"train_source": ["mlqa-r", str(path)], "train_max_groups": 30, "batch_size": 8,
                             "ratio_mono": 0.0, "ratio_cross": 0.5, "ratio_multi": 0.5,
                             "source_weights": [0.25, 0.75]}, apply_env=False)
    pairs = experiment.training_pairs(params)
    assert pairs.column_names == ["group", "lang", "query", "passage", "source"]  # negatives: none drops them
    assert pairs.unique("source") == ["mlqa-r", str(path)] and pairs["source"].count(str(path)) == 40
    sampler = experiment.make_sampler(params, pairs)
    assert isinstance(sampler, MultiSourceSampler) and sampler.weights == [0.25, 0.75]
    assert sampler.describe()["sources"][str(path)]["groups"] == 20
    # the file's own negatives, when asked for; a benchmark then has none to give
    with pytest.raises(ParameterError, match="negatives='source' takes the source's own negatives, and the "
                                             "benchmark 'mlqa-r' has none"):
        resolve_params({**params, "negatives": "source"}, apply_env=False)
    own = experiment.training_pairs({**params, "train_source": str(path), "negatives": "source"})
    assert own["negative"][:2] == ["n0en", "n0de"]
    frame.drop(columns="negative").to_json(tmp_path / "plain.jsonl", orient="records", lines=True)
    with pytest.raises(ParameterError, match="has no 'negative' column"):
        experiment.training_pairs({**params, "train_source": str(tmp_path / "plain.jsonl"), "negatives": "source"})


def test_the_step_log_records_the_source(two_sources):
    sampler = MultiSourceSampler(two_sources, 8, {"multi": 1.0}, weights=[0.5, 0.5], seed=0)
    expected = [next(s).source for s in [copy.deepcopy(sampler)] for _ in range(3)]
    records = train(tiny_model(), sampler, steps=3, lr=1e-3, progress=False)
    assert [r["source"] for r in records] == expected and set(expected) <= {"mlqa-r", "xquad-r"}
