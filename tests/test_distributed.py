"""Data-parallel training (hybridlib.training.distributed) on 2 gloo processes equals one process on the same batches.

One spawn of 2 processes runs every distributed case and saves its results; the tests compare them with
the same computations done here in one process. The tiny model has dropout off, so both are deterministic.
Hard negatives (mined, some pairs without one) are gathered with their mask: the same equalities hold.
"""

import copy
import dataclasses
import json
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from hybridlib.training.cached_loss import contrastive_loss
from hybridlib.data.benchmarks import load_benchmark, pairs_from_benchmark
from hybridlib.training.distributed import all_reduce_gradients, gather_with_grad, shard, world
from hybridlib.training.loss import InfoNCELoss
from hybridlib.models.bi_encoder import tiny_model
from hybridlib.data.sampler import Batch, HybridBatchSampler
from hybridlib.training.loop import train

pytestmark = pytest.mark.torchrun  # two gloo processes (torch.multiprocessing)

WORLD = 2
BATCH = 8
# gradients clipped at 1.0 (the default): the logged norm shows a gradient of the wrong scale
TRAIN = {"steps": 3, "lr": 1e-3, "progress": False, "seed": 0}  # plus loss_fn=_loss_fn(): a fresh one per run
# Dropout off: the same gradients up to summation order. AdamW's first steps move each weight by about
# lr * sign(gradient), so a weight whose gradient is at rounding level can move differently: the
# training runs freeze the 8M-weight token table (its gradient is checked by the one-step tests).
ATOL, RTOL = 1e-6, 1e-5
TRAIN_ATOL = 1e-5


class _Stop(Exception):
    """Raised by a callback to cut a run short after a checkpoint (simulates a crash)."""


# ---------------------------------------------------------------------- shared set-up


def _no_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def _copy(model):
    """A deep copy sharing the (read-only) tokenizer, whose copy would cost a second."""
    return copy.deepcopy(model, memo={id(model.tokenizer): model.tokenizer})


def _frozen_table(model):
    model.encoder.get_input_embeddings().weight.requires_grad_(False)
    return model


def _loss_fn(gather: bool = True, form: str = "batch") -> InfoNCELoss:
    # a trained loss parameter is covered too
    return InfoNCELoss(0.05, learnable_temperature=True, gather_across_ranks=gather, form=form)


def _step_sampler(pairs) -> HybridBatchSampler:
    """Its first batch is the fixed global batch of the one-step tests: half mono, half cross."""
    return HybridBatchSampler(pairs, BATCH, {"mono": 0.5, "cross": 0.5}, mix="within_batch", seed=1)


def _train_sampler(pairs) -> HybridBatchSampler:
    return HybridBatchSampler(pairs, BATCH, {"cross": 1.0}, seed=0)


def _samplers(pairs, negative_pairs) -> dict:
    return {"step": _step_sampler(pairs), "train": _train_sampler(pairs),
            "negatives_step": _step_sampler(negative_pairs), "negatives_train": _train_sampler(negative_pairs)}


def _one_step(model, loss_fn, batch: Batch, gather: bool) -> dict:
    """Embed ``batch`` (this rank's slice), loss (gathered if ``loss_fn`` gathers across ranks, as ``gather``
    says), backward, all-reduce: summed gradients after a gathered loss, averaged after local ones."""
    # with gather_across_ranks, over the gathered global batch (hard negatives and their mask too, if any)
    out = contrastive_loss(model.embed, batch.queries, batch.passages, loss_fn, negatives=batch.negatives)
    out.loss.backward()
    all_reduce_gradients(model.parameters(), average=not gather)
    all_reduce_gradients(loss_fn.parameters(), average=True)  # full (gather) or local (no gather) on each rank
    return {"loss": out.loss.item(), "grads": _grads(model, loss_fn), "hard": out.hard_negative_similarity}


def _grads(model, loss_fn) -> dict[str, torch.Tensor]:
    named = [*model.named_parameters(), *(("loss." + n, p) for n, p in loss_fn.named_parameters())]
    return {name: p.grad.clone() for name, p in named if p.grad is not None}


def _params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _worker(rank: int, init_file: str, out_dir: str, model, samplers: dict) -> None:
    """One of the 2 processes: every distributed case, results saved to ``out_dir/rank<r>.pt``."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)  # 2 processes on 2 cores
    try:
        base = _copy(model)  # own storage: spawn shares the argument's tensors with the parent
        batch = next(copy.deepcopy(samplers["step"]))
        results = {"world": world()}

        # (a) gathered embeddings: the global loss and the summed gradients
        results["gathered"] = _one_step(_copy(base), _loss_fn(), shard(batch, rank, WORLD), gather=True)

        # (c) local negatives through train(): one step with lr 0 leaves the averaged gradients in .grad
        m, loss_fn = _copy(base), _loss_fn(gather=False)
        records = train(m, copy.deepcopy(samplers["step"]), steps=1, lr=0.0, max_grad_norm=None, loss_fn=loss_fn,
                        progress=False)
        results["local"] = {"records": records, "grads": _grads(m, loss_fn)}

        # (b) 3 steps with gathered embeddings; only rank 0 writes the log and the checkpoint
        m = _frozen_table(_copy(base))
        records = train(m, copy.deepcopy(samplers["train"]), **TRAIN, loss_fn=_loss_fn(), log_path=f"{out_dir}/steps.jsonl",
                        checkpoint_dir=f"{out_dir}/checkpoint", checkpoint_every=2)
        results["train"] = {"records": records, "params": _params(m)}

        # the same cut short after step 2's checkpoint and resumed on every rank, with GradCache
        # (each rank embeds its 4 pairs in chunks of 3 texts)
        def stop(step, record):
            if step == 2:
                raise _Stop

        resumable = {**TRAIN, "log_path": f"{out_dir}/resumed.jsonl", "checkpoint_dir": f"{out_dir}/resumed",
                     "checkpoint_every": 1, "cache_chunk_size": 3}
        try:
            train(_frozen_table(_copy(base)), copy.deepcopy(samplers["train"]), **resumable, loss_fn=_loss_fn(),
                  callback=stop)
        except _Stop:
            pass
        dist.barrier()  # as after a restart: rank 0 has written the checkpoint of step 2
        m = _frozen_table(_copy(base))
        records = train(m, copy.deepcopy(samplers["train"]), **resumable, loss_fn=_loss_fn())
        results["resumed"] = {"records": records, "params": _params(m)}

        # (d) with hard negatives: one gathered step in both loss forms, and 3 gathered training steps
        negatives_batch = shard(next(copy.deepcopy(samplers["negatives_step"])), rank, WORLD)
        for form in ("batch", "paper"):
            results[f"negatives_{form}"] = _one_step(_copy(base), _loss_fn(form=form), negatives_batch, gather=True)
        m = _frozen_table(_copy(base))
        records = train(m, copy.deepcopy(samplers["negatives_train"]), **TRAIN, loss_fn=_loss_fn())
        results["negatives_train"] = {"records": records, "params": _params(m)}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def pairs():
    bench = load_benchmark("mlqa-r", languages=["ar", "en", "es", "hi"], max_groups=60)  # >= 47 groups each
    return pairs_from_benchmark(bench)


@pytest.fixture(scope="module")
def negative_pairs():
    bench = load_benchmark("mlqa-r", languages=["ar", "en", "es", "hi"], max_groups=60)
    return pairs_from_benchmark(bench, negatives=True)


@pytest.fixture(scope="module")
def base_model():
    return _no_dropout(tiny_model())


@pytest.fixture(scope="module")
def ranks(pairs, negative_pairs, base_model, tmp_path_factory):
    """The 2 processes' results, [rank 0, rank 1]."""
    out = tmp_path_factory.mktemp("distributed")
    samplers = _samplers(pairs, negative_pairs)
    model = _copy(base_model)
    mp.spawn(_worker, args=(str(out / "init"), str(out), model, samplers), nprocs=WORLD, join=True)
    results = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for r, result in enumerate(results):
        result["dir"] = out
        assert result["world"] == (r, WORLD)
    return results


def _assert_close_dicts(actual: dict, expected: dict, atol=ATOL, rtol=RTOL) -> None:
    """Every tensor within ``atol + rtol * (its largest magnitude)``: a sum over many tokens (the token-type
    gradient, say) is rounded differently when the batch is split, relative to its scale, not to each entry."""
    assert actual.keys() == expected.keys()
    for name in expected:
        tolerance = atol + rtol * float(expected[name].abs().max())
        torch.testing.assert_close(actual[name], expected[name], atol=tolerance, rtol=0, msg=lambda m: f"{name}: {m}")


def _assert_identical_on_ranks(ranks, *keys) -> None:
    values = []
    for result in ranks:
        value = result
        for key in keys:
            value = value[key]
        values.append(value)
    for name in values[0]:
        assert torch.equal(values[0][name], values[1][name]), f"{keys} {name} differs between ranks"


# ---------------------------------------------------------------------- tests


def test_gathered_step_equals_one_process_over_the_global_batch(ranks, pairs, base_model):
    batch = next(_step_sampler(pairs))
    expected = _one_step(_copy(base_model), _loss_fn(), batch, gather=False)  # one process: no-ops
    assert "loss.logit_scale" in expected["grads"] and "encoder.embeddings.word_embeddings.weight" in expected["grads"]
    for result in ranks:
        assert math.isclose(result["gathered"]["loss"], expected["loss"], rel_tol=RTOL, abs_tol=ATOL)
        _assert_close_dicts(result["gathered"]["grads"], expected["grads"])
    _assert_identical_on_ranks(ranks, "gathered", "grads")


def test_local_negatives_average_the_local_gradients(ranks, pairs, base_model):
    batch = next(_step_sampler(pairs))
    locals_ = [_one_step(_copy(base_model), _loss_fn(), shard(batch, r, WORLD), gather=False)
               for r in range(WORLD)]
    expected = {name: sum(local["grads"][name] for local in locals_) / WORLD for name in locals_[0]["grads"]}
    for result in ranks:
        (record,) = result["local"]["records"]
        assert record["batch_size"] == BATCH
        assert math.isclose(record["loss"], sum(local["loss"] for local in locals_) / WORLD, rel_tol=RTOL)
        _assert_close_dicts(result["local"]["grads"], expected)
    _assert_identical_on_ranks(ranks, "local", "grads")
    # not the global batch's gradient (test above): fewer negatives per query
    gathered = ranks[0]["gathered"]["grads"]["loss.logit_scale"]
    assert not torch.allclose(expected["loss.logit_scale"], gathered, rtol=1e-3)


def test_training_equals_one_process(ranks, pairs, base_model):
    model = _frozen_table(_copy(base_model))
    expected = train(model, _train_sampler(pairs), **TRAIN, loss_fn=_loss_fn())
    expected_params = _params(model)
    for case in ("train", "resumed"):
        for result in ranks:
            records = result[case]["records"]
            assert len(records) == len(expected) == 3
            for got, want in zip(records, expected):
                for key in ("step", "kind", "batch_size", "kinds", "query_langs", "passage_langs", "lr"):
                    assert got[key] == want[key], (case, key)
                for key in ("loss", "accuracy", "positive_similarity", "negative_similarity", "temperature",
                            "grad_norm"):
                    assert math.isclose(got[key], want[key], rel_tol=RTOL, abs_tol=ATOL), (case, key, got, want)
            _assert_close_dicts(result[case]["params"], expected_params, atol=TRAIN_ATOL, rtol=RTOL)
        _assert_identical_on_ranks(ranks, case, "params")


@pytest.mark.parametrize("form", ["batch", "paper"])
def test_gathered_step_with_negatives_equals_one_process(ranks, negative_pairs, base_model, form):
    batch = next(_step_sampler(negative_pairs))
    assert None in batch.negatives and sum(n is not None for n in batch.negatives) >= BATCH // 2  # masks matter
    expected = _one_step(_copy(base_model), _loss_fn(form=form), batch, gather=False)  # one process: no-ops
    for result in ranks:
        got = result[f"negatives_{form}"]
        assert math.isclose(got["loss"], expected["loss"], rel_tol=RTOL, abs_tol=ATOL)
        assert math.isclose(got["hard"], expected["hard"], rel_tol=RTOL, abs_tol=ATOL)
        _assert_close_dicts(got["grads"], expected["grads"])
    _assert_identical_on_ranks(ranks, f"negatives_{form}", "grads")
    plain = _one_step(_copy(base_model), _loss_fn(), dataclasses.replace(batch, negatives=[]), gather=False)
    assert abs(plain["loss"] - expected["loss"]) > 1e-3  # the negatives took part


def test_gathered_training_with_negatives_equals_one_process(ranks, negative_pairs, base_model):
    model = _frozen_table(_copy(base_model))
    expected = train(model, _train_sampler(negative_pairs), **TRAIN, loss_fn=_loss_fn())
    for result in ranks:
        records = result["negatives_train"]["records"]
        for got, want in zip(records, expected):
            assert got["negatives"] == want["negatives"] > 0 and got["negatives_dropped"] == want["negatives_dropped"]
            for key in ("loss", "accuracy", "hard_negative_similarity", "grad_norm"):
                assert math.isclose(got[key], want[key], rel_tol=RTOL, abs_tol=ATOL), (key, got, want)
        _assert_close_dicts(result["negatives_train"]["params"], _params(model), atol=TRAIN_ATOL, rtol=RTOL)
    _assert_identical_on_ranks(ranks, "negatives_train", "params")


def test_only_rank_zero_writes(ranks):
    out = ranks[0]["dir"]
    logged = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert logged == ranks[0]["train"]["records"]  # rank 0's lines, once each
    assert [r["batch_size"] for r in logged] == [BATCH] * 3  # the global batch
    resumed = [json.loads(line) for line in (out / "resumed.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [1, 2, 3]
    state = json.loads((out / "checkpoint" / "checkpoint.json").read_text())
    assert state["step"] == 3


def test_shard_covers_the_batch_in_order():
    n = 12
    batch = Batch(*[[f"{column}{i}" for i in range(n)] for column in "kgqpQP"])
    for world_size in (1, 2, 3, 4, 6, 12):
        parts = [shard(batch, r, world_size) for r in range(world_size)]
        assert all(type(part) is Batch and len(part) == n // world_size for part in parts)
        for column in ("kinds", "groups", "query_langs", "passage_langs", "queries", "passages"):
            assert sum((getattr(part, column) for part in parts), []) == getattr(batch, column)
    with pytest.raises(ValueError, match=r"batch_size 12 is not divisible by the world size 5.*multiple of 5"):
        shard(batch, 0, 5)


def test_one_process_primitives_are_no_ops():
    assert world() == (0, 1)
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x
    x.grad = torch.ones_like(x)
    all_reduce_gradients([x], average=True)
    assert torch.equal(x.grad, torch.ones_like(x))
