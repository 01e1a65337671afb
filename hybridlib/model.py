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
from tqdm.auto import tqdm

from .embedded import EMBEDDED_NAME, convert_embedded_model, shared_embedded_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ROLES = ("query", "passage")
POOLINGS = ("mean", "cls")
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

    def tokenize(self, texts: Sequence[str], role: str):
        """Prefix, tokenize (pad to the longest, truncate to the role's limit), move to device."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        prefix = self.prefix(role)
        batch = self.tokenizer(
            [prefix + t for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length(role),
            return_tensors="pt",
        )
        return batch.to(self.device)

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
        if max_padding is None:
            return self(self.tokenize(texts, role))
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        prefix = self.prefix(role)
        ids = self.tokenizer(
            [prefix + t for t in texts], truncation=True, max_length=self.max_length(role)
        )["input_ids"]
        buckets = length_buckets([len(x) for x in ids], max_padding)
        parts = [self(self._pad([ids[i] for i in bucket])) for bucket in buckets]
        order = torch.tensor([i for bucket in buckets for i in bucket], device=self.device)
        return torch.cat(parts).index_select(0, torch.argsort(order))

    def _pad(self, ids: list[list[int]]) -> dict:
        """Right-padded input_ids and attention_mask tensors on the model's device."""
        width = max(len(x) for x in ids)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.tensor([x + [pad_id] * (width - len(x)) for x in ids])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        return {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}

    def encode(
        self,
        texts: Sequence[str],
        role: str,
        batch_size: int = 64,
        show_progress: bool = True,
    ) -> np.ndarray:
        """Embeddings as float32 numpy [n, dim], for evaluation.

        Texts are sorted by token count (longest first) so each batch pads only to its own longest
        text; the result is in the input order. Runs in eval mode under `torch.inference_mode()` and
        restores the previous mode afterwards.
        """
        texts = list(texts)
        self._check_role(role)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        prefix = self.prefix(role)
        lengths = [
            len(ids)
            for ids in self.tokenizer(
                [prefix + t for t in texts], truncation=True, max_length=self.max_length(role)
            )["input_ids"]
        ]
        order = np.argsort(-np.asarray(lengths), kind="stable")
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode(), tqdm(
                total=len(texts), desc=f"encode {role}", unit="text", disable=not show_progress
            ) as bar:
                for start in range(0, len(texts), batch_size):
                    idx = order[start : start + batch_size]
                    emb = self.embed([texts[i] for i in idx], role)
                    out[idx] = emb.float().cpu().numpy()
                    bar.update(len(idx))
        finally:
            self.train(was_training)
        return out

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
