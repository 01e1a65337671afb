"""Early stopping on a validation loss: SQuADShifts from a local copy in the hub's layout (no network), the
validation loss itself, and the choice of the weights on a planted validation curve, also across a resume."""

import copy
import json
from pathlib import Path

import pytest
import torch

from hybridlib.runs import experiment
from hybridlib.training import loop as train_module
from hybridlib.runs.config import resolve_params
from hybridlib.data.benchmarks import load_benchmark, pairs_from_benchmark
from hybridlib.training.loss import InfoNCELoss
from hybridlib.models.bi_encoder import tiny_model
from hybridlib.data.pair_sources import sentence_breaks, squadshifts_benchmark, squadshifts_files
from hybridlib.data.sampler import HybridBatchSampler
from hybridlib.data.tokens import PairTokens
from hybridlib.training.loop import best_weights_path, train, validation_loss

FIXTURE = Path(__file__).parent / "fixtures" / "squadshifts"
LR = 3e-3


# ---------------------------------------------------------------------- SQuADShifts


def test_fixture_has_the_hub_layout():
    files = squadshifts_files(base_url=FIXTURE)
    assert list(files) == ["new_wiki", "nyt", "reddit", "amazon"]
    assert all(Path(path).is_file() and path.endswith(f"{subset}/test/0000.parquet") for subset, path in files.items())
    assert squadshifts_files(["nyt"])["nyt"] == (
        "hf://datasets/ludwigschmidt/squadshifts@refs%2Fconvert%2Fparquet/nyt/test/0000.parquet")
    with pytest.raises(ValueError, match=r"subsets \['news'\]"):
        squadshifts_files(["news"])


def test_sentences_split_after_end_punctuation():
    text = 'It rose. Did it? "Yes!" she said. Then 3.5 more'
    assert [text[a:b] for a, b in sentence_breaks(text)] == ["It rose. ", "Did it? ", '"Yes!" she said. ', "Then 3.5 more"]
    assert sentence_breaks("One sentence.") == [(0, 13)]


def test_squadshifts_as_a_benchmark_of_gold_sentences():
    import pyarrow.parquet as pq

    bench = squadshifts_benchmark(base_url=FIXTURE)
    assert bench.languages == ["en"] and len(bench.queries) == 11 and len(bench.candidates) == 15
    text = dict(zip(bench.candidates["id"], bench.candidates["text"]))
    answers = {}
    for path in squadshifts_files(base_url=FIXTURE).values():
        for row in pq.read_table(path).to_pylist():
            answers[row["id"]] = row["answers"]["text"][0]
    for qid, group in zip(bench.queries["id"], bench.queries["group"]):
        (gold,) = bench.relevant[qid]
        assert answers[group] in text[gold]  # the sentence holding the answer start
    pairs = pairs_from_benchmark(bench, negatives=True)
    by_group = {row["group"]: row for row in pairs}
    assert by_group["new_wiki-1-0"]["negative"] is None  # a one-sentence context has no distractor
    canberra = by_group["new_wiki-0-0"]
    assert canberra["passage"] == "Canberra is the capital city of Australia."
    assert canberra["negative"] in {text[f"en:new_wiki:0:{s}"] for s in (1, 2, 3)}  # from the same context
    assert len(squadshifts_benchmark(["nyt", "amazon"], base_url=FIXTURE, max_groups=4).queries) == 4


def test_validation_on_squadshifts_is_mono_and_leaves_the_model_as_it_was(monkeypatch, capsys):
    monkeypatch.setenv("HYBRIDLIB_SQUADSHIFTS_URL", str(FIXTURE))
    params = resolve_params({"validation_source": "squadshifts", "validate_every": 2, "steps": 4, "batch_size": 4,
                             "validation_batches": 3, "negatives": "mined", "ratio_mono": 0.0, "ratio_cross": 1.0},
                            apply_env=False)
    pairs = experiment.validation_pairs(params)
    assert "negative" in pairs.column_names
    model = tiny_model().train()
    validate = experiment.make_validation(params, model, pairs)
    assert "every validation batch is mono" in capsys.readouterr().out
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    first, second = validate(), validate()
    assert first == second > 0  # eval mode, fixed batches: no dropout, the same number
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_validation_loss_is_the_mean_loss_of_its_batches():
    pairs = pairs_from_benchmark(load_benchmark("mlqa-r", max_groups=40))
    model = tiny_model()
    sampler = HybridBatchSampler(pairs, 8, {"multi": 1.0}, seed=0)
    tokens = PairTokens.build(pairs, model, cache=False)
    batches = [tokens.attach(next(sampler)) for _ in range(3)]
    loss_fn = InfoNCELoss()
    expected = []
    with torch.no_grad():
        for batch in batches:
            q, p = model.embed_ids(batch.query_ids), model.embed_ids(batch.passage_ids)
            expected.append(loss_fn(q, p).loss.item())
    got = validation_loss(model, loss_fn, batches, mixed_precision="no", packing=False)()
    assert got == pytest.approx(sum(expected) / 3, rel=1e-5)


# ---------------------------------------------------------------------- the weights of the lowest loss


@pytest.fixture(scope="module")
def pairs():
    return pairs_from_benchmark(load_benchmark("mlqa-r", max_groups=100))


@pytest.fixture(scope="module")
def base_model():
    return tiny_model()


def planted(curve: dict[int, float]):
    """A validation callable that returns the planted loss of the step it is called at (steps 2, 4, ...)."""
    calls = iter(sorted(curve))
    return lambda: curve[next(calls)]


CURVE = {2: 3.0, 4: 1.0, 6: 2.0, 8: 1.5}  # the best step: 4


def weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def run(base_model, pairs, folder, curve, **kwargs):
    model = copy.deepcopy(base_model)
    seen = {}

    def keep(step, record):
        seen[step] = weights(model)

    sampler = HybridBatchSampler(pairs, 8, {"multi": 1.0}, seed=0)
    records = train(model, sampler, steps=8, lr=LR, progress=False, validate=planted(curve), validate_every=2,
                    log_path=folder / "steps.jsonl", checkpoint_dir=folder / "checkpoint", checkpoint_every=3,
                    callback=kwargs.pop("callback", keep), **kwargs)
    return model, records, seen


def assert_weights(model, expected):
    got = weights(model)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[name], expected[name]) for name in got)


def test_the_lowest_validation_loss_picks_the_weights(base_model, pairs, tmp_path, monkeypatch):
    writes = []
    real_write = train_module._BestWeights.write
    monkeypatch.setattr(train_module._BestWeights, "write", lambda self: (writes.append(self.step), real_write(self)))
    model, records, seen = run(base_model, pairs, tmp_path, CURVE)
    assert [r["validation_loss"] for r in records] == [None, 3.0, None, 1.0, None, 2.0, None, 1.5]
    assert writes == [2, 4]  # once per new best
    assert_weights(model, seen[4])
    assert not all(torch.equal(seen[4][n], seen[8][n]) for n in seen[4])  # the last step's weights differ
    stored = torch.load(best_weights_path(tmp_path / "checkpoint"), weights_only=True)
    assert (stored["step"], stored["loss"]) == (4, 1.0)
    assert experiment.summarize_training(records)["validation"] == {
        "best_step": 4, "best_loss": 1.0, "curve": [[2, 3.0], [4, 1.0], [6, 2.0], [8, 1.5]]}


class Cut(Exception):
    pass


def cut_at(stop):
    def callback(step, record):
        if step == stop:
            raise Cut

    return callback


def test_the_best_weights_survive_a_resume(base_model, pairs, tmp_path):
    _, _, seen = run(base_model, pairs, tmp_path / "whole", CURVE)
    with pytest.raises(Cut):  # after the step-6 checkpoint (every 3 steps) and its validation
        run(base_model, pairs, tmp_path / "cut", CURVE, callback=cut_at(7))
    resumed, records, _ = run(base_model, pairs, tmp_path / "cut", {8: 1.5})  # only step 8 is validated again
    assert [r["validation_loss"] for r in records] == [None, 3.0, None, 1.0, None, 2.0, None, 1.5]
    assert_weights(resumed, seen[4])


def test_a_stop_between_the_checkpoint_and_the_best_file(base_model, pairs, tmp_path, monkeypatch):
    """A new best forces a checkpoint of its step, then writes the file: a run killed in between resumes from
    that checkpoint and takes the best weights from the restored model."""
    _, _, seen = run(base_model, pairs, tmp_path / "whole", CURVE)
    real_write = train_module._BestWeights.write

    def killed_at_4(self):
        if self.step == 4:
            raise Cut
        real_write(self)

    monkeypatch.setattr(train_module._BestWeights, "write", killed_at_4)
    with pytest.raises(Cut):
        run(base_model, pairs, tmp_path / "cut", CURVE)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "checkpoint.json").read_text())["step"] == 4
    monkeypatch.setattr(train_module._BestWeights, "write", real_write)
    resumed, _, _ = run(base_model, pairs, tmp_path / "cut", {6: 2.0, 8: 1.5})
    assert_weights(resumed, seen[4])
    assert torch.load(best_weights_path(tmp_path / "cut" / "checkpoint"), weights_only=True)["step"] == 4


def test_validate_and_validate_every_go_together(base_model, pairs):
    with pytest.raises(ValueError, match="give both or neither"):
        train(base_model, HybridBatchSampler(pairs, 8, {"multi": 1.0}), steps=1, validate_every=2, progress=False)


def test_a_run_validates_on_squadshifts_and_records_the_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDLIB_SQUADSHIFTS_URL", str(FIXTURE))
    params = resolve_params({"model": "tiny-random", "steps": 4, "batch_size": 4, "train_max_groups": 40,
                             "ratio_mono": 0.0, "ratio_cross": 0.5, "ratio_multi": 0.5, "negatives": "mined",
                             "loss_form": "paper", "validation_source": "squadshifts", "validate_every": 2,
                             "validation_batches": 2, "eval_languages": ["en", "de"], "max_groups": 8,
                             "query_max_length": 24, "passage_max_length": 32, "checkpoint_every": 2,
                             "save_model": False, "output_dir": str(tmp_path), "run_name": "run"}, apply_env=False)
    metrics = json.loads(experiment.run_experiment(params, progress=False).read_text())
    validation = metrics["training"]["validation"]
    assert [step for step, _ in validation["curve"]] == [2, 4]
    assert validation["best_loss"] == min(loss for _, loss in validation["curve"])
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert [r["validation_loss"] is not None for r in steps] == [False, True, False, True]
    assert all(r["negatives"] > 0 and r["source"] == "mlqa-r" for r in steps)
    assert not (tmp_path / "run" / "checkpoint").exists() and not (tmp_path / "run" / "checkpoint-best.pt").exists()
