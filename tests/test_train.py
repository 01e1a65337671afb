"""Smoke-train the tiny model on real MLQA-R pairs; schedule, optimizer groups and failure modes."""

import copy
import json
import math

import pytest
import torch

from hybridlib.data.benchmarks import load_benchmark, pairs_from_benchmark
from hybridlib.training.loss import InfoNCELoss, LossOutput
from hybridlib.models.bi_encoder import tiny_model
from hybridlib.data.sampler import HybridBatchSampler
from hybridlib.training.loop import make_optimizer, make_scheduler, resolve_warmup_steps, train

STEPS = 25
WARMUP = 3
LR = 3e-3  # high: the tiny model is randomly initialised
RATIOS = {"mono": 0.34, "cross": 0.33, "multi": 0.33}
FIELDS = {
    "step", "kind", "source", "batch_size", "kinds", "query_langs", "passage_langs", "negatives", "negatives_dropped",
    "loss", "accuracy", "positive_similarity", "negative_similarity", "hard_negative_similarity", "temperature",
    "lr", "grad_norm", "seconds", "pairs_per_second", "validation_loss",
}


@pytest.fixture(scope="module")
def pairs():
    return pairs_from_benchmark(load_benchmark("mlqa-r", max_groups=200))


@pytest.fixture(scope="module")
def base_model():
    return tiny_model()  # built once (several seconds); tests train deep copies of it


@pytest.fixture
def fresh_model(base_model):
    return lambda: copy.deepcopy(base_model)


def make_sampler(pairs, seed=0):
    return HybridBatchSampler(pairs, batch_size=16, ratios=RATIOS, seed=seed)


@pytest.fixture(scope="module")
def run(pairs, base_model, tmp_path_factory):
    """One short fine-tuning run shared by the tests below."""
    log_path = tmp_path_factory.mktemp("train") / "steps.jsonl"
    model = copy.deepcopy(base_model)
    calls = []
    records = train(
        model, make_sampler(pairs), steps=STEPS, lr=LR, warmup_steps=WARMUP, log_path=log_path,
        progress=False, callback=lambda step, record: calls.append((step, record)),
    )
    return {"model": model, "records": records, "log_path": log_path, "calls": calls}


def test_loss_falls(run):
    losses = [r["loss"] for r in run["records"]]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.9 * first, losses  # typically ~0.75 on this data


def test_jsonl_log_has_one_valid_line_per_step(run):
    lines = run["log_path"].read_text(encoding="utf-8").splitlines()
    assert len(lines) == STEPS
    logged = [json.loads(line) for line in lines]
    assert logged == run["records"]
    assert [r["step"] for r in logged] == list(range(1, STEPS + 1))
    kinds_seen = set()
    for r in logged:
        assert set(r) == FIELDS
        assert r["batch_size"] == 16
        assert sum(r["kinds"].values()) == 16
        assert sum(r["query_langs"].values()) == sum(r["passage_langs"].values()) == 16
        assert r["kind"] in set(r["kinds"]) | {"mixed"}
        kinds_seen.add(r["kind"])
        for key in ("loss", "grad_norm", "seconds", "pairs_per_second"):
            assert math.isfinite(r[key]) and r[key] > 0
        assert 0.0 <= r["accuracy"] <= 1.0
        assert -1.0 <= r["negative_similarity"] <= 1.0 and -1.0 <= r["positive_similarity"] <= 1.0
        assert r["temperature"] == pytest.approx(0.05)
        assert r["pairs_per_second"] == pytest.approx(16 / r["seconds"])
        # pairs without hard negatives, no validation, a sampler without a name
        assert r["negatives"] == r["negatives_dropped"] == 0 and r["hard_negative_similarity"] is None
        assert r["validation_loss"] is None and r["source"] is None
        if r["kind"] == "mono":
            assert len(r["query_langs"]) == 1 and r["query_langs"] == r["passage_langs"]
    assert kinds_seen <= {"mono", "cross", "multi"} and len(kinds_seen) >= 2


def test_logged_lr_follows_warmup_then_linear_decay(run):
    lrs = [r["lr"] for r in run["records"]]
    expected = [LR * i / WARMUP if i < WARMUP else LR * (STEPS - i) / (STEPS - WARMUP) for i in range(STEPS)]
    assert lrs == pytest.approx(expected)


def test_callback_and_eval_mode(run):
    assert [step for step, _ in run["calls"]] == list(range(1, STEPS + 1))
    assert [record for _, record in run["calls"]] == run["records"]
    assert not run["model"].training


def test_same_seed_same_run_and_learnable_temperature(pairs, fresh_model):
    def short_run(seed):
        return train(fresh_model(), make_sampler(pairs), steps=2, lr=1e-2,
                     loss_fn=InfoNCELoss(learnable_temperature=True), progress=False, seed=seed)

    a, b = short_run(0), short_run(0)
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-5)
    # the temperature is trained: it moves away from its initial value
    assert a[0]["temperature"] == pytest.approx(0.05)
    assert abs(a[-1]["temperature"] - 0.05) > 1e-4


def test_schedule_values():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    scheduler = make_scheduler(optimizer, steps=10, warmup_steps=0.3)  # fraction -> 3 warmup steps
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1] + [0.1 * (10 - i) / 7 for i in range(4, 10)])
    assert scheduler.get_last_lr()[0] == pytest.approx(0.0)  # decayed to 0 after the last step


def test_warmup_resolution():
    assert resolve_warmup_steps(0, 100) == 0
    assert resolve_warmup_steps(7, 100) == 7
    assert resolve_warmup_steps(0.1, 100) == 10
    for bad in (1.0, -0.1, -1):
        with pytest.raises(ValueError):
            resolve_warmup_steps(bad, 100)
    with pytest.raises(TypeError):
        resolve_warmup_steps("10", 100)


def test_no_weight_decay_on_biases_and_layernorm():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    extra = torch.nn.Module()
    extra.logit_scale = torch.nn.Parameter(torch.tensor(3.0))
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.01, extra_modules=[extra])
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert by_decay[0.01] == {id(model[0].weight), id(model[2].weight)}
    assert by_decay[0.0] == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[2].bias),
                             id(extra.logit_scale)}


def test_nan_loss_raises_naming_the_step(pairs, fresh_model, tmp_path):
    calls = []

    def nan_on_third_call(q, p):
        calls.append(1)
        loss = (q * p).sum() * (math.nan if len(calls) == 3 else 1.0)
        return LossOutput(loss=loss, accuracy=0.0, positive_similarity=0.0, negative_similarity=0.0,
                          temperature=1.0)

    model = fresh_model()
    log_path = tmp_path / "steps.jsonl"
    with pytest.raises(FloatingPointError, match="step 3"):
        train(model, make_sampler(pairs), steps=5, loss_fn=nan_on_third_call, log_path=log_path,
              progress=False)
    assert len(log_path.read_text().splitlines()) == 2  # the steps before the failure were kept
    assert not model.training


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_tracks_full_precision(pairs, fresh_model, run, precision):
    # same lr for the first steps as the shared run (warmup does not depend on the total steps)
    records = train(fresh_model(), make_sampler(pairs), steps=2, lr=LR, warmup_steps=WARMUP,
                    mixed_precision=precision, progress=False)
    for mixed, full in zip(records, run["records"][:2]):
        assert mixed["loss"] == pytest.approx(full["loss"], rel=1e-2)
        assert mixed["grad_norm"] == pytest.approx(full["grad_norm"], rel=5e-2)


def test_rejects_unknown_mixed_precision(pairs, base_model):
    with pytest.raises(ValueError, match="mixed_precision"):
        train(base_model, make_sampler(pairs), steps=1, mixed_precision="fp8", progress=False)


class Cut(Exception):
    """Raised by a callback to stop a run right after a step (as a crash would)."""


def test_resume_rewrites_the_log_atomically_and_continues_exactly(pairs, fresh_model, tmp_path, monkeypatch):
    """A run cut after its step-2 checkpoint and restarted gives the uninterrupted run's steps; the kept part
    of the log is written to a temporary file and renamed, so a kill during the rewrite loses nothing."""
    plain = train(fresh_model(), make_sampler(pairs), steps=4, lr=LR, progress=False)

    def cut(step, record):
        if step == 3:  # one step past the checkpoint: the resumed run must drop it from the log
            raise Cut

    log_path = tmp_path / "steps.jsonl"
    kwargs = dict(steps=4, lr=LR, progress=False, log_path=log_path, checkpoint_dir=tmp_path / "ckpt",
                  checkpoint_every=2)
    with pytest.raises(Cut):
        train(fresh_model(), make_sampler(pairs), callback=cut, **kwargs)
    assert len(log_path.read_text().splitlines()) == 3
    # a kill while the kept steps are rewritten: the old log must still be there, whole
    from pathlib import Path

    real_replace = Path.replace

    def killed_before_rename(self, target):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Path, "replace", killed_before_rename)
    with pytest.raises(KeyboardInterrupt):
        train(fresh_model(), make_sampler(pairs), **kwargs)
    assert len(log_path.read_text().splitlines()) == 3
    monkeypatch.setattr(Path, "replace", real_replace)
    resumed = train(fresh_model(), make_sampler(pairs), **kwargs)  # restores weights, optimizer, sampler
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]  # the kept steps, then the new ones
    logged = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert [r["query_langs"] for r in logged] == [r["query_langs"] for r in plain]
    assert [r["loss"] for r in logged] == pytest.approx([r["loss"] for r in plain], rel=1e-5)


def test_whole_number_warmup_means_steps_everywhere(pairs, fresh_model):
    from hybridlib.runs.config import resolve_params

    for given in (3, 3.0):  # YAML / papermill give 3; Python or a YAML "3.0" may give a float
        assert resolve_params({"warmup": given, "steps": 5}, apply_env=False)["warmup"] == 3
    warmup = resolve_params({"warmup": 3, "steps": 5}, apply_env=False)["warmup"]
    records = train(fresh_model(), make_sampler(pairs), steps=5, lr=LR, warmup_steps=warmup, progress=False)
    assert [r["lr"] for r in records] == pytest.approx([0.0, LR / 3, 2 * LR / 3, LR, LR / 2])


def test_checkpoint_every_without_a_folder_is_an_error(pairs, base_model):
    with pytest.raises(ValueError, match="checkpoint_every=5 needs a checkpoint_dir"):
        train(base_model, make_sampler(pairs), steps=1, checkpoint_every=5, progress=False)


def test_torch_floor_has_fused_cpu_adamw():
    """make_optimizer asks for the fused AdamW kernel, which CPU torch has from 2.4 on."""
    import re
    from pathlib import Path

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    floor = re.search(r'"torch>=(\d+)\.(\d+)', pyproject)
    assert floor and (int(floor[1]), int(floor[2])) >= (2, 4), floor
    model = torch.nn.Linear(3, 3)
    assert make_optimizer(model, lr=1e-3, weight_decay=0.0).defaults["fused"] is True


def test_pretokenized_pairs_give_the_same_run_and_are_cached(pairs, fresh_model, tmp_path, monkeypatch):
    """A PairTokens table (tokenized once, cached) gives exactly the steps of tokenizing every batch."""
    from hybridlib.data.tokens import PairTokens

    monkeypatch.setenv("HYBRIDLIB_CACHE_DIR", str(tmp_path))
    model = fresh_model()
    tokens = PairTokens.build(pairs, model)
    assert len(tokens) == len(pairs) and len(list((tmp_path / "tokens").glob("*.npz"))) == 1
    assert tokens.ids([0, 5], "passage") == model.token_ids([pairs[0]["passage"], pairs[5]["passage"]], "passage")
    plain = train(fresh_model(), make_sampler(pairs), steps=3, lr=LR, progress=False)
    # the steps must not call the tokenizer, and a second build must read the cache
    monkeypatch.setattr(type(model.tokenizer), "__call__", lambda *a, **k: pytest.fail("tokenizer called"))
    cached = PairTokens.build(pairs, model)
    ahead = train(fresh_model(), make_sampler(pairs), steps=3, lr=LR, progress=False, tokens=cached)
    assert [r["query_langs"] for r in ahead] == [r["query_langs"] for r in plain]
    assert [r["loss"] for r in ahead] == [r["loss"] for r in plain]  # the same ids: bit-identical
