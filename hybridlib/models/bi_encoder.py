"""Bi-encoder: a Hugging Face encoder + pooling + L2 normalisation + query/passage prefixes.

One shared encoder embeds both queries and passages; the role only picks the text prefix (e5 style,
"query: " / "passage: ") and the maximum length. `save` writes a folder that loads with
`transformers.AutoModel`, with `sentence_transformers.SentenceTransformer`, and with `BiEncoder.load`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import build_folder, cache_dir, file_lock
from ..models import embedded
from ..parameters import ENCODE_BACKENDS, ENCODE_DTYPES, POOLINGS
from ..progress import progress_bar
from .embedded import EMBEDDED_NAME, shared_embedded_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ROLES = ("query", "passage")
CONFIG_NAME = "hybridlib.json"
_SETTINGS = ("pooling", "query_prefix", "passage_prefix", "query_max_length", "passage_max_length")


class BiEncoder(torch.nn.Module):
    """Shared-weight bi-encoder over any Hugging Face encoder.

    Args:
        encoder: a `transformers.PreTrainedModel` returning `last_hidden_state`.
        tokenizer: its (fast) tokenizer.
        pooling: "mean" (attention-mask weighted average of token states) or "cls" (first token).
        query_prefix / passage_prefix: text prepended for each role ("" for none).
        query_max_length / passage_max_length: truncation length in tokens, special tokens included.
    """

    def __init__(
        self,
        encoder: "PreTrainedModel",
        tokenizer: "PreTrainedTokenizerBase",
        pooling: str = "mean",
        query_prefix: str = "query: ",
        passage_prefix: str = "passage: ",
        query_max_length: int = 64,
        passage_max_length: int = 256,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        for name, value in (("query_max_length", query_max_length), ("passage_max_length", passage_max_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"{name} must be an int >= 2, got {value!r}")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.train(encoder.training)  # one mode for the whole module (from_pretrained gives eval)

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dim(self) -> int:
        """Embedding size."""
        return int(self.encoder.config.hidden_size)

    def settings(self) -> dict:
        """Pooling, prefixes and max lengths (what `hybridlib.json` stores)."""
        return {k: getattr(self, k) for k in _SETTINGS}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.settings().items())

    # ------------------------------------------------------------------ embedding

    def _check_role(self, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")

    def prefix(self, role: str) -> str:
        self._check_role(role)
        return self.query_prefix if role == "query" else self.passage_prefix

    def max_length(self, role: str) -> int:
        """Token limit for a role, capped by what the model can take."""
        self._check_role(role)
        wanted = self.query_max_length if role == "query" else self.passage_max_length
        limits = [wanted, getattr(self.encoder.config, "max_position_embeddings", wanted)]
        if 0 < (self.tokenizer.model_max_length or 0) <= 100_000:  # larger = "no limit" sentinel
            limits.append(self.tokenizer.model_max_length)  # e.g. 512 for XLM-R's 514 positions
        return min(limits)

    def token_ids(self, texts: Sequence[str], role: str) -> list[list[int]]:
        """Token ids of each text with the role's prefix, truncated to the role's limit, not padded."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        prefix = self.prefix(role)
        return self.tokenizer([prefix + t for t in texts], truncation=True, max_length=self.max_length(role))["input_ids"]

    def collate(self, ids: Sequence[Sequence[int]]) -> dict:
        """``input_ids`` right-padded to the longest and their ``attention_mask``, on the model's device."""
        width = max(len(x) for x in ids)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.tensor([list(x) + [pad_id] * (width - len(x)) for x in ids])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        return {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}

    def tokenize(self, texts: Sequence[str], role: str) -> dict:
        """Prefix, tokenize, pad to the longest, as tensors on the model's device (``collate(token_ids(...))``)."""
        return self.collate(self.token_ids(texts, role))

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence vectors [n, dim] from token states [n, seq, dim] (not normalised)."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def forward(self, batch) -> torch.Tensor:
        """L2-normalised embeddings [n, dim] of an already tokenized batch."""
        hidden = self.encoder(**batch).last_hidden_state
        return F.normalize(self.pool(hidden, batch["attention_mask"]).float(), p=2, dim=-1)

    def embed(self, texts: Sequence[str], role: str, max_padding: float | None = None) -> torch.Tensor:
        """Embeddings [n, dim] with autograd (for training); uses the current train/eval mode.

        ``max_padding=None`` runs one forward pass padded to the longest text. A number runs
        length-sorted sub-batches instead (see ``length_buckets``), each padded only to its own
        longest text, and returns the rows in the input order: the same embeddings (attention
        masks hide padding; rounding aside) for less compute when lengths vary, as in training
        batches where padding to the longest text roughly doubles the tokens.
        """
        return self.embed_ids(self.token_ids(texts, role), max_padding)

    def embed_ids(self, ids: Sequence[Sequence[int]], max_padding: float | None = None,
                  packed: bool = False) -> torch.Tensor:
        """``embed`` for texts already turned into token ids (``token_ids``).

        ``packed``: run all texts as one padding-free sequence (``embed_packed``); ``max_padding`` must then
        be None, since there is no padding left to bound.
        """
        if packed:
            if max_padding is not None:
                raise ValueError(f"packed=True leaves no padding to bound: max_padding={max_padding} must be None")
            return self.embed_packed(ids)
        if max_padding is None:
            return self(self.collate(ids))
        buckets = length_buckets([len(x) for x in ids], max_padding)
        parts = [self(self.collate([ids[i] for i in bucket])) for bucket in buckets]
        order = torch.tensor([i for bucket in buckets for i in bucket], device=self.device)
        return torch.cat(parts).index_select(0, torch.argsort(order))

    def embed_packed(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Embeddings [n, dim] of texts run as ONE packed sequence: no token is padding, so no FLOPs go to it.

        The texts are concatenated into a [1, total] row; position ids restart for every text (from the
        model's own first position: 0 for BERT, ``padding_idx + 1`` for XLM-R/RoBERTa) and attention is
        variable-length (``packed_attention``): a token attends to the tokens of its own text only. The
        result equals the padded forward pass (up to rounding), gradients included.
        """
        lengths = torch.tensor([len(x) for x in ids])
        device = self.device
        input_ids = torch.tensor([t for x in ids for t in x], device=device)[None]
        starts = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        positions = (torch.arange(int(lengths.sum())) - starts + _first_position(self.encoder))[None].to(device)
        cu_seqlens = torch.nn.functional.pad(torch.cumsum(lengths, 0), (1, 0)).to(device=device, dtype=torch.int32)
        longest = int(lengths.max())
        config = self.encoder.config
        before, config._attn_implementation = config._attn_implementation, PACKED_ATTENTION
        try:
            hidden = self.encoder(input_ids=input_ids, position_ids=positions, token_type_ids=torch.zeros_like(input_ids),
                                  cu_seq_lens_q=cu_seqlens, cu_seq_lens_k=cu_seqlens, max_length_q=longest,
                                  max_length_k=longest).last_hidden_state[0]
        finally:
            config._attn_implementation = before
        if self.pooling == "cls":
            pooled = hidden[cu_seqlens[:-1].long()]
        else:
            segment = torch.repeat_interleave(torch.arange(len(ids), device=device), lengths.to(device))
            pooled = torch.zeros(len(ids), hidden.shape[-1], dtype=hidden.dtype, device=device).index_add(0, segment, hidden)
            pooled = pooled / lengths.to(device=device, dtype=hidden.dtype)[:, None]
        return F.normalize(pooled.float(), p=2, dim=-1)

    def encode(
        self,
        texts: Sequence[str],
        role: str,
        batch_size: int = 64,
        show_progress: bool = True,
        backend: str = "eager",
        dtype: str = "fp32",
        packed: bool = False,
    ) -> np.ndarray:
        """Embeddings as float32 numpy [n, dim], for evaluation.

        Texts are sorted by token count (longest first, ``encode_batches``) so each batch pads only to
        its own longest text; the result is in the input order. Runs in eval mode without autograd and
        restores the previous mode afterwards.

        ``backend``: ``"eager"`` (PyTorch as is) or ``"compile"`` (``torch.compile`` with weight freezing:
        the same fp32 numbers up to rounding, ~1.1x faster on this project's CPU after a one-off compile of
        about half a minute; needs a C++ compiler; recompiled when the weights change). ``dtype``: ``"fp32"``
        or ``"bf16"`` (autocast: faster where the CPU or GPU has bf16 units, and the scores change a little:
        opt in knowingly). ``packed``: each batch as one padding-free sequence (``embed_packed``), for GPUs.
        """
        if backend not in ENCODE_BACKENDS or dtype not in ENCODE_DTYPES:
            raise ValueError(f"backend must be one of {ENCODE_BACKENDS} and dtype one of {ENCODE_DTYPES}, "
                             f"got {backend!r} and {dtype!r}")
        texts = list(texts)
        self._check_role(role)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = self.encode_batches(self.token_ids(texts, role) if texts else [], batch_size)
        forward = self._compiled_forward() if backend == "compile" else self.embed_ids
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
        was_training = self.training
        self.eval()
        try:
            # no_grad rather than inference_mode: compiled frozen graphs are traced under it
            with torch.no_grad(), autocast, progress_bar(
                total=len(texts), desc=f"encode {role}", unit="text", disable=not show_progress
            ) as bar:
                for rows, ids in batches:
                    out[rows] = (self.embed_packed(ids) if packed else forward(ids)).float().cpu().numpy()
                    bar.update(len(rows))
        finally:
            self.train(was_training)
        return out

    def _compiled_forward(self):
        """``embed_ids`` through ``torch.compile`` with frozen weights, compiled once per weight version."""
        import torch._inductor.config as inductor

        version = sum(p._version for p in self.encoder.parameters())  # grows with every in-place update
        if getattr(self, "_compiled", None) is None or self._compiled[0] != version:
            if getattr(self, "_compiled", None) is not None:
                torch.compiler.reset()  # else the graph compiled with the old weights as constants is reused
            self._compiled = (version, torch.compile(self.encoder, dynamic=True))
        compiled = self._compiled[1]

        def forward(ids):
            batch = self.collate(ids)
            with inductor.patch(freezing=True):  # weights become constants of the compiled graph
                hidden = compiled(**batch).last_hidden_state
            return F.normalize(self.pool(hidden, batch["attention_mask"]).float(), p=2, dim=-1)

        return forward

    @staticmethod
    def encode_batches(ids: Sequence[Sequence[int]], batch_size: int) -> list[tuple[np.ndarray, list]]:
        """``(rows, their token ids)`` per inference batch: longest texts first, ``batch_size`` at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = np.argsort(-np.asarray([len(x) for x in ids], dtype=np.int64), kind="stable")
        return [(rows, [ids[i] for i in rows]) for rows in (order[s : s + batch_size]
                                                            for s in range(0, len(ids), batch_size))]

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> Path:
        """Write a folder for `BiEncoder.load`, `AutoModel.from_pretrained` and `SentenceTransformer`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        _write_sentence_transformers_files(path, self)
        _write_json(path / CONFIG_NAME, {"format": 1, **self.settings()})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides) -> "BiEncoder":
        """Load a folder written by `save`; `overrides` replace stored settings (e.g. pooling)."""
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        stored = json.loads((path / CONFIG_NAME).read_text())
        settings = {k: stored[k] for k in _SETTINGS if k in stored}
        settings.update(_check_overrides(overrides))
        encoder = AutoModel.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(encoder, tokenizer, **settings)


# ---------------------------------------------------------------------- helpers

PACKED_ATTENTION = "hybridlib_packed"
try:  # PyTorch's variable-length flash attention (CUDA, half precision), torch >= 2.9
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn
except ImportError:  # pragma: no cover - older torch
    _varlen_attn = None


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, cu_seq_lens_q=None,
                     max_length_q=None, **kwargs):
    """Attention over one packed row (``BiEncoder.embed_packed``): [1, heads, total, d], texts at ``cu_seq_lens_q``.

    On CUDA in half precision: PyTorch's varlen flash kernel, which has no attention-probability dropout
    (hidden-state dropout is unaffected; ``varlen_attention_drops_dropout`` says when this applies). Elsewhere
    (CPU, fp32): SDPA with a block-diagonal mask, the reference the tests compare with the padded path.
    """
    if query.is_cuda and _varlen_attn is not None and query.dtype in (torch.float16, torch.bfloat16):
        q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [total, heads, d]
        out = _varlen_attn(q, k, v, cu_seq_lens_q, cu_seq_lens_q, max_length_q, max_length_q, scale=scaling)
        return out[None], None  # [1, total, heads, d], as the model expects
    lengths = (cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).long()
    segment = torch.repeat_interleave(torch.arange(len(lengths), device=query.device), lengths)
    mask = segment[:, None] == segment[None, :]
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                         dropout_p=dropout if module.training else 0.0)
    return out.transpose(1, 2), None


def varlen_available() -> bool:
    """Whether packed sequences get a real variable-length kernel here (CUDA + PyTorch's varlen attention)."""
    return _varlen_attn is not None and torch.cuda.is_available()


def _register_packed_attention() -> None:
    from transformers import AttentionInterface

    # a name unknown to transformers' mask functions: the model then builds no padding mask (there is none)
    AttentionInterface.register(PACKED_ATTENTION, packed_attention)


_register_packed_attention()


def _first_position(encoder) -> int:
    """The position id of a text's first token: RoBERTa-style models count from ``padding_idx + 1``."""
    embeddings = encoder.embeddings
    if hasattr(embeddings, "create_position_ids_from_input_ids"):
        return int(embeddings.padding_idx) + 1
    return 0


def length_buckets(lengths: Sequence[int], max_padding: float) -> list[list[int]]:
    """Indices grouped into sub-batches of similar length, longest first.

    Walks the texts from longest to shortest and starts a new sub-batch when adding the next text
    would make the sub-batch's padded size (texts x its longest) exceed ``1 + max_padding`` times
    its real tokens. ``max_padding=0`` gives one sub-batch per distinct length.
    """
    if max_padding < 0:
        raise ValueError(f"max_padding must be >= 0, got {max_padding}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    buckets: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        if current and (len(current) + 1) * lengths[current[0]] > (1 + max_padding) * (real + lengths[i]):
            buckets.append(current)
            current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        buckets.append(current)
    return buckets


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _write_sentence_transformers_files(path: Path, model: BiEncoder) -> None:
    """The classic sentence-transformers layout (Transformer -> Pooling -> Normalize).

    Uses the long-standing `sentence_transformers.models.*` names, which every release from 2.x on
    loads. sentence-transformers has one max length, so it gets the passage length; its prompts apply
    the same prefixes, and with `include_prompt` the prefix tokens are pooled as ours are.
    """
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    _write_json(path / "modules.json", modules)
    _write_json(
        path / "sentence_bert_config.json",
        {"max_seq_length": model.max_length("passage"), "do_lower_case": False},
    )
    _write_json(
        path / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": model.dim,
            "pooling_mode_cls_token": model.pooling == "cls",
            "pooling_mode_mean_tokens": model.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    (path / "2_Normalize").mkdir(exist_ok=True)
    _write_json(
        path / "config_sentence_transformers.json",
        {
            "prompts": {"query": model.query_prefix, "passage": model.passage_prefix},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )


def _check_overrides(overrides: dict) -> dict:
    unknown = sorted(set(overrides) - set(_SETTINGS))
    if unknown:
        raise TypeError(f"unknown BiEncoder setting(s) {unknown}; allowed: {list(_SETTINGS)}")
    return overrides


def convert_embedded_model(root: str | os.PathLike | None = None, force: bool = False) -> Path:
    """The embedded model as a Hugging Face / sentence-transformers folder in the cache, written once.

    The folder is ``<root>/multilingual-e5-small-q4`` (default root: ``cache.cache_dir()``), built in a
    temporary sibling and renamed at the end, so an interrupted conversion never leaves a half-written
    folder; a complete one (it holds ``hybridlib.json``) is reused unless ``force``. The conversion holds the
    lock ``.multilingual-e5-small-q4.lock`` beside it: processes that start together convert it once.
    """
    target = (Path(root).expanduser() if root is not None else cache_dir()) / EMBEDDED_NAME
    if (target / CONFIG_NAME).is_file() and not force:
        return target
    with file_lock(target.with_name(f".{EMBEDDED_NAME}.lock")):  # concurrent first runs convert it once
        if (target / CONFIG_NAME).is_file() and not force:
            return target  # another process converted it while this one waited
        with build_folder(target, marker=None if force else CONFIG_NAME) as tmp:
            encoder, parsed = embedded.build_embedded_model()
            BiEncoder(encoder, shared_embedded_tokenizer()).save(tmp)  # e5 recipe: mean pooling, e5 prefixes
            _write_json(tmp / "embedded_source.json", {**embedded.embedded_source(),
                                                       "format_version": parsed.header.version})
    return target


def load_model(name_or_path: str | os.PathLike, **overrides) -> BiEncoder:
    """Load a bi-encoder by name or folder.

    - "multilingual-e5-small-q4": the embedded model, converted into the cache once (no network);
    - a folder with `hybridlib.json` (written by `BiEncoder.save`): restored with its settings;
    - anything else: a Hugging Face encoder name or local folder (mean pooling, e5 prefixes unless
      overridden; pass query_prefix="" / passage_prefix="" for models trained without them).
    `overrides` are BiEncoder settings: pooling, query_prefix, passage_prefix, *_max_length.
    """
    from transformers import AutoModel, AutoTokenizer

    overrides = _check_overrides(overrides)
    name = os.fspath(name_or_path)
    if name == EMBEDDED_NAME:
        return BiEncoder.load(convert_embedded_model(), **overrides)
    path = Path(name).expanduser()
    if (path / CONFIG_NAME).is_file():
        return BiEncoder.load(path, **overrides)
    if not path.is_dir() and (path.exists() or name.startswith(("/", "./", "../", "~"))):
        raise FileNotFoundError(f"{name!r} is not a model folder")
    source = str(path) if path.is_dir() else name
    try:
        # transformers 5 keeps a checkpoint's dtype (some are fp16/bf16): train and score in fp32
        encoder = AutoModel.from_pretrained(source).float()
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        if path.is_dir():
            raise
        raise OSError(
            f"Could not load the model {name!r}: it is not a local folder, and it is neither in the "
            f"local Hugging Face cache nor downloadable here ({type(err).__name__}: {err}). "
            f"Fix: allow network access to the Hugging Face hub (and unset HF_HUB_OFFLINE) so it can be "
            f"downloaded, pass a local folder that holds the model, or use {EMBEDDED_NAME!r}, the "
            f"embedded model that needs no network."
        ) from err
    return BiEncoder(encoder, tokenizer, **overrides)


def tiny_model(
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    heads: int = 2,
    intermediate: int = 64,
    max_position: int = 128,
    **biencoder_kwargs,
) -> BiEncoder:
    """A tiny randomly initialised BERT with the real multilingual-e5-small tokenizer, for tests.

    Deterministic for a seed (the global RNG state is left untouched). The word embedding table is
    the full vocabulary (250037 x hidden_size). Returned in eval mode (no dropout noise), like a
    pretrained model from `from_pretrained`. Tiny models share one tokenizer instance, because
    parsing the 17 MB tokenizer.json takes seconds; do not mutate it.
    """
    from transformers import BertConfig, BertModel

    tokenizer = shared_embedded_tokenizer()
    config = BertConfig(
        vocab_size=250037,  # multilingual-e5-small's embedding rows (tokenizer has 250002 pieces)
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_position,
        type_vocab_size=2,
        hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = BertModel(config, add_pooling_layer=True)
    encoder.eval()
    return BiEncoder(encoder, tokenizer, **biencoder_kwargs)
