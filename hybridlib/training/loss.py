"""InfoNCE with in-batch negatives, returning diagnostics alongside the loss.

Pair ``i`` of a batch is (query ``i``, passage ``i``); every other passage of the batch is a negative
for query ``i``. With cosine similarities ``s_ij`` and temperature ``t`` the loss for query ``i`` is

    -log( exp(s_ii / t) / sum_j exp(s_ij / t) )

averaged over the batch (cross-entropy with the diagonal as targets). The symmetric variant also
scores each passage against all queries (the transposed logits) and averages the two directions.

Hard negatives (triplets): with a hard negative ``h_k`` per pair (missing ones masked out), the ``batch`` form
scores each query against every positive and every hard negative of the batch (logits [n, 2n], as
sentence-transformers' MultipleNegativesRankingLoss does with triplets); the ``paper`` form, the reference
paper's Eq. 1 as printed, against its own positive and the batch's hard negatives only (logits [n, 1 + n]).
The symmetric term is the same in both: each positive against the batch's queries.

Under torchrun, ``gather_across_ranks`` makes the batch the *global* batch: every rank's query, passage and
hard-negative embeddings are all-gathered (with gradients, ``distributed.gather_with_grad``) before scoring, so negatives
come from every rank, as sentence-transformers' ``gather_across_devices`` does. In one process it does nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..parameters import LOSS_FORMS
from .distributed import gather_with_grad

# Upper bound on the logit scale 1 / temperature (temperature >= 0.01), as in CLIP: an unbounded
# learnable scale can grow until the softmax saturates and training becomes unstable.
MAX_LOGIT_SCALE = 100.0


@dataclass
class LossOutput:
    """The loss and batch diagnostics (diagnostics are plain floats, computed without grad)."""

    loss: torch.Tensor  # scalar, carries the graph for backward()
    accuracy: float  # fraction of queries whose highest-scoring passage is their own
    positive_similarity: float  # mean cosine of the matching (diagonal) pairs
    negative_similarity: float  # mean cosine of the non-matching (off-diagonal) pairs; nan if n == 1
    temperature: float  # temperature actually used (after clamping, for a learnable one)
    hard_negative_similarity: float | None = None  # mean cosine of each query and its own hard negative; None: none


class InfoNCELoss(nn.Module):
    """InfoNCE over in-batch negatives on cosine similarities.

    Args:
        temperature: softmax temperature ``t`` (logits are cosine / t). Must be positive.
        learnable_temperature: learn the temperature. It is stored as ``logit_scale = log(1 / t)``
            (a Parameter, as CLIP does), and the scale ``exp(logit_scale)`` is clamped to at most
            ``MAX_LOGIT_SCALE`` = 100 in the forward pass, i.e. the temperature never goes below 0.01.
            While clamped the parameter receives no gradient through the scale.
        symmetric: average the query->passage and passage->query cross-entropies.
        form: how hard negatives are scored (see the module docstring): ``"batch"`` or ``"paper"``, which needs them.
        gather_across_ranks: score the global batch of all ranks (see the module docstring); the caller
            then sums the encoder gradients over the ranks (``distributed.gradient_sync``).

    Inputs are L2-normalised inside the forward pass (cheap, and makes the loss correct for
    un-normalised embeddings too). Half-precision inputs are upcast to float32 and autocast is
    disabled for the loss, so the softmax is always computed in at least float32.
    """

    def __init__(
        self,
        temperature: float = 0.05,
        learnable_temperature: bool = False,
        symmetric: bool = False,
        gather_across_ranks: bool = False,
        form: str = "batch",
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if form not in LOSS_FORMS:
            raise ValueError(f"form must be one of {list(LOSS_FORMS)}, got {form!r}")
        self.form = form
        self.symmetric = symmetric
        self.gather_across_ranks = gather_across_ranks
        self.learnable_temperature = learnable_temperature
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.logit_scale = nn.Parameter(log_scale)
        else:
            # a buffer: moves with .to(device), is saved in state_dict, but is not trained
            self.register_buffer("logit_scale", log_scale)

    def scale(self) -> torch.Tensor:
        """The logit scale 1 / temperature, clamped to at most MAX_LOGIT_SCALE."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    @property
    def temperature(self) -> float:
        """Current effective temperature (after clamping)."""
        return 1.0 / float(self.scale().detach())

    def forward(self, query_embeddings: torch.Tensor, passage_embeddings: torch.Tensor,
                negative_embeddings: torch.Tensor | None = None, negative_mask: torch.Tensor | None = None) -> LossOutput:
        """Loss for ``n`` pairs: ``query_embeddings`` [n, d] and ``passage_embeddings`` [n, d]; optionally one hard
        negative per pair, ``negative_embeddings`` [n, d] with ``negative_mask`` [n] (False: no negative; its row is
        ignored), a fixed shape so that every rank gathers the same."""
        if query_embeddings.ndim != 2 or query_embeddings.shape != passage_embeddings.shape:
            raise ValueError(
                "expected query and passage embeddings of the same shape [n, d], got "
                f"{tuple(query_embeddings.shape)} and {tuple(passage_embeddings.shape)}"
            )
        with_negatives = negative_embeddings is not None
        if with_negatives and (negative_embeddings.shape != query_embeddings.shape or negative_mask is None
                               or negative_mask.shape != query_embeddings.shape[:1]):
            raise ValueError(f"expected negative embeddings [n, d] = {tuple(query_embeddings.shape)} and a mask [n], got "
                             f"{tuple(negative_embeddings.shape)} and "
                             f"{None if negative_mask is None else tuple(negative_mask.shape)}")
        if self.form == "paper" and not with_negatives:
            raise ValueError("form='paper' scores each query against its own positive and the batch's hard negatives: "
                             "it needs negative embeddings")
        if self.gather_across_ranks:
            query_embeddings, passage_embeddings = gather_with_grad(query_embeddings), gather_with_grad(passage_embeddings)
            if with_negatives:  # the mask travels as numbers (a gather of bools is not portable)
                negative_embeddings = gather_with_grad(negative_embeddings)
                negative_mask = gather_with_grad(negative_mask.to(query_embeddings.dtype)) > 0
        # float32 at least (bf16/fp16 -> float32), float64 stays float64
        dtype = torch.promote_types(query_embeddings.dtype, torch.float32)
        with torch.autocast(device_type=query_embeddings.device.type, enabled=False):
            q = F.normalize(query_embeddings.to(dtype), dim=-1)
            p = F.normalize(passage_embeddings.to(dtype), dim=-1)
            similarities = q @ p.T  # cosine, [n, n]
            scale = self.scale().to(dtype)
            targets = torch.arange(len(q), device=q.device)
            if with_negatives:
                h = F.normalize(negative_embeddings.to(dtype), dim=-1)
                own = similarities if self.form == "batch" else similarities.diagonal()[:, None]
                logits = torch.cat([own, q @ h.T], dim=1) * scale
                # missing negatives never win; masked after scaling, so no -inf meets a learnable scale's gradient
                missing = torch.cat([torch.zeros_like(own, dtype=torch.bool),
                                     (~negative_mask)[None, :].expand(len(q), -1)], dim=1)
                logits = logits.masked_fill(missing, -math.inf)
                query_targets = targets if self.form == "batch" else torch.zeros_like(targets)
            else:
                logits, query_targets = similarities * scale, targets
            loss = F.cross_entropy(logits, query_targets)
            if self.symmetric:
                loss = (loss + F.cross_entropy(similarities.T * scale, targets)) / 2
        diagnostics = _diagnostics(similarities, logits, query_targets)
        if with_negatives:
            diagnostics["hard_negative_similarity"] = _own_negative_similarity(q, h, negative_mask)
        return LossOutput(loss=loss, temperature=1.0 / float(scale.detach()), **diagnostics)


@torch.no_grad()
def _diagnostics(similarities: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Retrieval accuracy (over the scored candidates) and mean positive / in-batch negative cosine of [n, n]."""
    n = len(similarities)
    positives = similarities.diagonal()
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=similarities.device)
    return {
        "accuracy": float((logits.argmax(dim=1) == targets).float().mean()),
        "positive_similarity": float(positives.mean()),
        "negative_similarity": float(similarities[off_diagonal].mean()) if n > 1 else math.nan,
    }


@torch.no_grad()
def _own_negative_similarity(q: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> float | None:
    """Mean cosine of each query with its own hard negative, over the pairs that have one."""
    return float((q * h).sum(dim=1)[mask].mean()) if bool(mask.any()) else None
