"""Padding-free packed sequences (BiEncoder.embed_packed) equal the padded forward pass, gradients included.

On CPU the packed attention is the block-diagonal SDPA reference; on a GPU PyTorch's varlen kernel computes
the same function (bench/gpu.py measures it). Both BERT (positions from 0) and XLM-R (positions from
padding_idx + 1, which a wrong start would break silently) are checked.
"""

import copy

import pytest
import torch

from hybridlib.models import bi_encoder as model_module
from hybridlib.training.loss import InfoNCELoss
from hybridlib.models.bi_encoder import BiEncoder, tiny_model

TEXTS = ["Short one.", "A noticeably longer sentence about the history of the Carolina Panthers defence.",
         "Mittellanger deutscher Satz über das Wetter.", "火车站在哪里？", "x",
         "¿Dónde está la estación de tren más cercana a la universidad?"]


def xlmr_tiny(pooling="mean"):
    from transformers import AutoModel, XLMRobertaConfig

    bert = tiny_model()
    config = XLMRobertaConfig(vocab_size=250037, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=130, pad_token_id=bert.tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = AutoModel.from_config(config, add_pooling_layer=False)
    return BiEncoder(encoder.eval(), bert.tokenizer, pooling=pooling)


MODELS = {"bert-mean": lambda: tiny_model(), "bert-cls": lambda: tiny_model(pooling="cls"),
          "xlmr-mean": lambda: xlmr_tiny(), "xlmr-cls": lambda: xlmr_tiny("cls")}


def no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


@pytest.mark.parametrize("name", MODELS)
def test_packed_embeddings_equal_padded(name):
    model = MODELS[name]()
    ids = model.token_ids(TEXTS, "passage")
    padded, packed = model.embed_ids(ids), model.embed_ids(ids, packed=True)
    assert padded.shape == packed.shape == (len(TEXTS), model.dim)
    assert (padded - packed).abs().max() < 1e-5


def test_a_wrong_first_position_is_caught(monkeypatch):
    """XLM-R counts positions from padding_idx + 1 = 2: packing from 0 would silently shift every position."""
    model = xlmr_tiny()
    ids = model.token_ids(TEXTS, "passage")
    padded = model.embed_ids(ids)
    assert model_module._first_position(model.encoder) == model.tokenizer.pad_token_id + 1 == 2
    monkeypatch.setattr(model_module, "_first_position", lambda encoder: 0)
    assert (padded - model.embed_ids(ids, packed=True)).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["bert-mean", "xlmr-mean"])
def test_packed_gradients_equal_padded(name):
    base = no_dropout(MODELS[name]()).train()
    grads = {}
    for packed in (False, True):
        model, loss_fn = copy.deepcopy(base), InfoNCELoss(learnable_temperature=True)
        queries = model.token_ids(TEXTS, "query")
        passages = model.token_ids(TEXTS[::-1], "passage")
        out = loss_fn(model.embed_ids(queries, packed=packed), model.embed_ids(passages, packed=packed))
        out.loss.backward()
        grads[packed] = {n: p.grad for n, p in [*model.named_parameters(), *loss_fn.named_parameters()]
                         if p.grad is not None}
    assert grads[True].keys() == grads[False].keys()
    assert "encoder.embeddings.position_embeddings.weight" in grads[True]
    for name_, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name_], grad, atol=1e-6, rtol=1e-4, msg=name_)


def test_packing_and_a_padding_bound_cannot_be_combined():
    model = tiny_model()
    with pytest.raises(ValueError, match="max_padding=0.25 must be None"):
        model.embed_ids(model.token_ids(TEXTS, "query"), max_padding=0.25, packed=True)


def test_training_with_packing_follows_the_padded_run(mlqa_pairs):
    """Dropout off: packed training steps equal padded ones (CPU: the block-diagonal reference attention)."""
    from hybridlib.data.sampler import HybridBatchSampler
    from hybridlib.training.loop import train

    base = no_dropout(tiny_model())
    runs = {}
    for packing in (False, True):
        sampler = HybridBatchSampler(mlqa_pairs, 8, {"cross": 0.5, "multi": 0.5}, seed=0)
        runs[packing] = train(copy.deepcopy(base), sampler, steps=3, lr=3e-3, progress=False, packing=packing,
                              max_padding=None)
    for a, b in zip(runs[True], runs[False]):
        assert a["kind"] == b["kind"] and a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    with pytest.raises(ValueError, match="max_padding=0.25 needs packing off"):
        train(copy.deepcopy(base), sampler, steps=1, packing=True, max_padding=0.25, progress=False)


@pytest.mark.slow  # torch.compile of the encoder: about 20 s on 2 cores
def test_encode_backends_keep_the_numbers_and_follow_weight_updates():
    """backend="compile" (frozen weights) equals eager to rounding and is recompiled when weights change;
    dtype="bf16" is close but not equal (an opt-in); packed encode equals padded."""
    import numpy as np

    model = tiny_model()
    texts = TEXTS * 5
    eager = model.encode(texts, "passage", show_progress=False)
    compiled = model.encode(texts, "passage", show_progress=False, backend="compile")
    assert np.abs(compiled - eager).max() < 1e-5
    assert np.abs(model.encode(texts, "passage", show_progress=False, packed=True) - eager).max() < 1e-5
    bf16 = model.encode(texts, "passage", show_progress=False, dtype="bf16")
    assert 1e-6 < np.abs(bf16 - eager).max() < 0.05
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(1.01)
    after = model.encode(texts, "passage", show_progress=False, backend="compile")
    assert np.abs(after - model.encode(texts, "passage", show_progress=False)).max() < 1e-5
    assert np.abs(after - compiled).max() > 1e-5  # not the graph compiled with the old weights
    with pytest.raises(ValueError, match="backend must be one of"):
        model.encode(texts, "passage", backend="onnx")
