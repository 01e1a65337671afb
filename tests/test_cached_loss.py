"""GradCache gives the loss and gradients of the plain path, dropout included, on real MLQA-R pairs.

With dropout active the masks depend on the shape of each forward pass, so the plain reference embeds
the same chunks with autograd (for chunk size 12, the whole batch: exactly the plain training path).
Without dropout the chunking does not matter and the reference is the whole-batch forward pass.
"""

import contextlib
import copy
import math
from collections import Counter

import pytest
import torch

import functools

from hybridlib.training.cached_loss import cached_contrastive_loss
from hybridlib.data.benchmarks import load_benchmark, pairs_from_benchmark
from hybridlib.training.loss import InfoNCELoss, LossOutput
from hybridlib.models.bi_encoder import tiny_model
from hybridlib.data.sampler import HybridBatchSampler
from hybridlib.training.loop import train

N_PAIRS = 12
ATOL, RTOL = 1e-6, 1e-5
RATIOS = {"mono": 0.34, "cross": 0.33, "multi": 0.33}
LOSSES = {
    "default": {},
    "symmetric": {"symmetric": True},
    "learnable_temperature": {"learnable_temperature": True},
    "symmetric_learnable_temperature": {"symmetric": True, "learnable_temperature": True},
}


@pytest.fixture(scope="module")
def pairs():
    return pairs_from_benchmark(load_benchmark("mlqa-r", max_groups=50))


@pytest.fixture(scope="module")
def batch(pairs):
    """12 pairs spread over the (language-sorted) rows, so several languages and lengths are mixed."""
    rows = pairs.select(range(0, len(pairs), len(pairs) // N_PAIRS)[:N_PAIRS])
    assert len(set(rows["lang"])) >= 4
    return list(rows["query"]), list(rows["passage"])


@pytest.fixture(scope="module")
def base_model():
    return tiny_model()  # several seconds to build; tests use deep copies


@pytest.fixture(scope="module")
def model(base_model):
    """A train-mode copy (dropout 0.1 active); no test changes its weights, only its .grad."""
    return copy.deepcopy(base_model).train()


def no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # BERT's attention reads its dropout rate from these modules too
    return model


def grads(*modules):
    out = {}
    for i, module in enumerate(modules):
        for name, param in module.named_parameters():
            out[f"{i}.{name}"] = None if param.grad is None else param.grad.clone()
            param.grad = None
    return out


def plain(model, loss_fn, queries, passages, chunk_size=None, context=contextlib.nullcontext, max_padding=None):
    """The plain path: embed with autograd (in chunks of chunk_size if given), loss, backward."""
    size = chunk_size or len(queries)

    def embed(texts, role):
        chunks = []
        for start in range(0, len(texts), size):
            with context():
                chunks.append(model.embed(texts[start : start + size], role, max_padding=max_padding))
        return torch.cat(chunks)

    out = loss_fn(embed(queries, "query"), embed(passages, "passage"))
    out.loss.backward()
    return out, grads(model, loss_fn)


def cached(model, loss_fn, queries, passages, chunk_size, scale_loss=None, max_padding=None, **kwargs):
    """GradCache: the loss, then its backward (scaled like GradScaler.scale when ``scale_loss``)."""
    embed = functools.partial(model.embed, max_padding=max_padding)
    out = cached_contrastive_loss(embed, queries, passages, loss_fn, chunk_size, **kwargs)
    (scale_loss(out.loss) if scale_loss else out.loss).backward()
    return out, grads(model, loss_fn)


def assert_same(out_a, grads_a, out_b, grads_b, atol=ATOL, rtol=RTOL):
    assert out_a.loss.item() == pytest.approx(out_b.loss.item(), abs=1e-6)
    for key in ("accuracy", "positive_similarity", "negative_similarity", "temperature"):
        assert getattr(out_a, key) == pytest.approx(getattr(out_b, key), abs=1e-6), key
    assert grads_a.keys() == grads_b.keys()
    for name, grad in grads_a.items():
        if grad is None or grads_b[name] is None:  # unused parameters (BERT's pooler) in both paths
            assert grad is None and grads_b[name] is None and ".pooler." in name, name
            continue
        assert torch.allclose(grad, grads_b[name], atol=atol, rtol=rtol), (
            name, float((grad - grads_b[name]).abs().max())
        )
    word = grads_a["0.encoder.embeddings.word_embeddings.weight"]
    assert word.abs().sum(dim=1).count_nonzero() > 50  # the rows of the batch's tokens got gradient


@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize("chunk_size", [1, 5, 12])
def test_cached_equals_plain_with_dropout(model, batch, chunk_size, loss_name):
    queries, passages = batch
    loss_fn = InfoNCELoss(**LOSSES[loss_name])
    torch.manual_seed(1)
    reference = plain(model, loss_fn, queries, passages, chunk_size)
    after_plain = torch.get_rng_state()
    torch.manual_seed(1)
    result = cached(model, loss_fn, queries, passages, chunk_size)
    assert_same(*result, *reference)
    # the replay leaves the random state where one forward pass leaves it
    assert torch.equal(torch.get_rng_state(), after_plain)
    assert result[0].loss.is_leaf  # its graph is gone; its backward hook ran the chunks' backward passes
    if LOSSES[loss_name].get("learnable_temperature"):
        assert result[1]["1.logit_scale"].abs() > 1e-4  # the temperature gradient is real, and equal


def test_dropout_is_active_so_replay_matters(model, batch):
    """Guard for the test above: different random states give clearly different embeddings/gradients."""
    queries, passages = batch
    loss_fn = InfoNCELoss()
    torch.manual_seed(1)
    a = model.embed(queries[:5], "query")
    b = model.embed(queries[:5], "query")
    assert (a - b).abs().max() > 1e-3
    torch.manual_seed(1)
    _, grads_1 = plain(model, loss_fn, queries, passages, 5)
    torch.manual_seed(2)
    _, grads_2 = plain(model, loss_fn, queries, passages, 5)
    name = "0.encoder.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(grads_1[name], grads_2[name], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("chunk_size", [1, 5])
def test_without_dropout_chunking_does_not_matter(base_model, batch, chunk_size):
    """Eval mode: the cached path equals the whole-batch plain path (chunks pad to other lengths)."""
    queries, passages = batch
    model = copy.deepcopy(base_model).eval()
    loss_fn = InfoNCELoss(symmetric=True, learnable_temperature=True)
    reference = plain(model, loss_fn, queries, passages)
    # other padding lengths sum in another order: the token-type gradient (a sum over every token,
    # ~0.8) moves by ~2e-6, so atol 1e-5 here
    assert_same(*cached(model, loss_fn, queries, passages, chunk_size), *reference, atol=1e-5)


def test_autocast_forward_context(model, batch):
    queries, passages = batch
    loss_fn = InfoNCELoss()

    def bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    torch.manual_seed(3)
    reference = plain(model, loss_fn, queries, passages, 5, context=bf16)
    torch.manual_seed(3)
    result = cached(model, loss_fn, queries, passages, 5, forward_context=bf16)
    assert_same(*result, *reference)
    # and bf16 really ran: the result is not the full-precision one
    torch.manual_seed(3)
    full = cached(model, loss_fn, queries, passages, 5)
    assert abs(full[0].loss.item() - result[0].loss.item()) > 1e-6


def test_sub_batches_inside_chunks_equal_the_plain_path(model, batch):
    """GradCache with max_padding (each chunk run as length-sorted sub-batches) equals the plain path with
    the same sub-batches, dropout included: neither option silently disables the other."""
    queries, passages = batch
    loss_fn = InfoNCELoss()
    torch.manual_seed(5)
    reference = plain(model, loss_fn, queries, passages, 6, max_padding=0.1)
    torch.manual_seed(5)
    assert_same(*cached(model, loss_fn, queries, passages, 6, max_padding=0.1), *reference)


def test_scale_loss_scales_every_gradient_and_nothing_moves_before_backward(model, batch):
    queries, passages = batch
    loss_fn = InfoNCELoss(learnable_temperature=True)
    torch.manual_seed(4)
    out, unscaled = cached(model, loss_fn, queries, passages, 5)
    torch.manual_seed(4)
    out_scaled, scaled = cached(model, loss_fn, queries, passages, 5, scale_loss=lambda loss: loss * 1024.0)
    assert out_scaled.loss.item() == pytest.approx(out.loss.item(), abs=1e-6)  # the loss is returned unscaled
    for name, grad in unscaled.items():
        if grad is None:
            continue
        assert torch.allclose(scaled[name], grad * 1024.0, atol=1024 * ATOL, rtol=RTOL), name

    # the caller checks the loss before its backward: until then no gradient has been touched
    out = cached_contrastive_loss(model.embed, queries, passages, loss_fn, 5)
    assert out.loss.requires_grad
    assert all(p.grad is None for p in [*model.parameters(), *loss_fn.parameters()])


def test_rejects_bad_arguments(model, batch):
    queries, passages = batch
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size"):
            cached_contrastive_loss(model.embed, queries, passages, InfoNCELoss(), bad)
    with pytest.raises(ValueError, match="passages"):
        cached_contrastive_loss(model.embed, queries, passages[:-1], InfoNCELoss(), 4)


# ---------------------------------------------------------------------- train(cache_chunk_size=...)


@pytest.fixture(scope="module")
def train_pairs(pairs):
    """The languages with enough groups for a mono batch of 16 (of 50 groups, de and zh have few)."""
    counts = Counter(pairs["lang"])
    return pairs.filter(lambda row: counts[row["lang"]] >= 16)


def short_train(model, pairs, **kwargs):
    sampler = HybridBatchSampler(pairs, batch_size=16, ratios=RATIOS, seed=0)
    return train(model, sampler, steps=2, lr=3e-3, progress=False, **kwargs)


def assert_same_steps(records_a, records_b, abs_tol, grad_rel=1e-4):
    assert [r["kind"] for r in records_a] == [r["kind"] for r in records_b]
    for a, b in zip(records_a, records_b):
        for key in ("loss", "accuracy", "temperature"):
            assert a[key] == pytest.approx(b[key], abs=abs_tol), (a["step"], key)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=grad_rel)


def test_train_with_cache_matches_plain_train(base_model, train_pairs):
    """Dropout off: any chunk size gives the plain run's steps (the updates are identical)."""
    def loss():
        return InfoNCELoss(learnable_temperature=True, symmetric=True)

    plain_records = short_train(no_dropout(copy.deepcopy(base_model)), train_pairs, loss_fn=loss())
    cached_records = short_train(no_dropout(copy.deepcopy(base_model)), train_pairs, cache_chunk_size=4,
                                 loss_fn=loss())
    assert_same_steps(cached_records, plain_records, abs_tol=1e-5)


def test_train_with_cache_replays_dropout(base_model, train_pairs):
    """Dropout on, one chunk per side (the batch size): the same draws as the plain run, step after step.

    Both runs use the same sub-batching (max_padding, the CPU default 0.25), so their forward passes match.
    """
    plain_records = short_train(copy.deepcopy(base_model), train_pairs)
    cached_records = short_train(copy.deepcopy(base_model), train_pairs, cache_chunk_size=16)
    assert_same_steps(cached_records, plain_records, abs_tol=1e-5)


def test_train_with_cache_fp16_scaler(base_model, train_pairs):
    """The GradScaler's scale reaches the cached gradients (else the unscaled norm would be off by 2**16)."""
    plain_records = short_train(no_dropout(copy.deepcopy(base_model)), train_pairs, mixed_precision="fp16")
    cached_records = short_train(no_dropout(copy.deepcopy(base_model)), train_pairs, mixed_precision="fp16",
                                 cache_chunk_size=4)
    assert_same_steps(cached_records, plain_records, abs_tol=1e-4, grad_rel=1e-3)  # seen: 1e-5 and 4e-5


def test_train_with_cache_raises_on_nan_loss(base_model, train_pairs):
    calls = []

    def nan_on_second_call(q, p):
        calls.append(1)
        loss = (q * p).sum() * (math.nan if len(calls) == 2 else 1.0)
        return LossOutput(loss=loss, accuracy=0.0, positive_similarity=0.0, negative_similarity=0.0,
                          temperature=1.0)

    with pytest.raises(FloatingPointError, match="step 2"):
        short_train(copy.deepcopy(base_model), train_pairs, loss_fn=nan_on_second_call, cache_chunk_size=4)
    with pytest.raises(ValueError, match="cache_chunk_size"):
        short_train(base_model, train_pairs, cache_chunk_size=0)
