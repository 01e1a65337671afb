"""GradCache: a contrastive loss over a batch larger than fits in memory, with exact gradients.

In-batch-negative losses couple every pair of the batch, so the batch cannot simply be split into
gradient-accumulation micro-batches. GradCache (Gao et al. 2021, "Scaling Deep Contrastive Learning
Batch Size under Memory Limited Setup") splits the computation at the embeddings instead:

    (a) embed all texts chunk by chunk without autograd (only the [n, dim] embeddings are kept);
    (b) compute the loss on those embeddings and backpropagate it to them: d loss / d embedding;
    (c) embed each chunk again, now with autograd, and backpropagate its cached embedding gradient
        through the encoder; parameter gradients accumulate over the chunks.

Peak activation memory is that of one chunk (plus the [n, n] loss), at the cost of a second forward
pass. ``contrastive_loss`` is the plain path (one forward pass with autograd per side); both return a
``LossOutput`` whose ``loss.backward()`` gives the same gradients, so the training loop does not care which. Each chunk's random state (dropout) is recorded before (a) and replayed in (c), so the second
forward pass is the same function as the first and the gradients are exact: identical (up to
floating-point rounding) to embedding the same chunks with autograd and calling ``loss.backward()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ContextManager

import torch

from .loss import LossOutput

Embed = Callable[[list[str], str], torch.Tensor]  # (texts, role) -> embeddings [n, dim]


class RandomState:
    """The torch CPU random state (and CUDA's, once CUDA is in use), to replay a forward pass."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        # CUDA's generators only matter once CUDA is initialised; checking avoids initialising it here.
        self.cuda_devices: list[int] = []
        self.cuda: list[torch.Tensor] = []
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.cuda_devices = list(range(torch.cuda.device_count()))
            self.cuda = [torch.cuda.get_rng_state(d) for d in self.cuda_devices]

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from the recorded state; the random state outside it is left untouched."""
        with torch.random.fork_rng(devices=self.cuda_devices):
            torch.set_rng_state(self.cpu)
            for device, state in zip(self.cuda_devices, self.cuda):
                torch.cuda.set_rng_state(state, device)
            yield


def check_chunk_size(chunk_size) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"cache_chunk_size must be an int >= 1, got {chunk_size!r}")


def contrastive_loss(
    embed: Embed,
    queries: Sequence[str],
    passages: Sequence[str],
    loss_fn: Callable[..., LossOutput],
    forward_context: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    negatives: Sequence | None = None,
) -> LossOutput:
    """The plain path: embed both sides with autograd (inside ``forward_context``), then ``loss_fn``.

    ``negatives``: one hard negative per pair, or None where a pair has none (an empty sequence: no negatives at
    all). They are embedded as passages and given to ``loss_fn`` as [n, dim] embeddings and a mask [n].
    """
    with forward_context():
        query_embeddings, passage_embeddings = embed(list(queries), "query"), embed(list(passages), "passage")
        present = [text for text in negatives or () if text is not None]
        compact = embed(present, "passage") if present else passage_embeddings[:0]
    return loss_fn(query_embeddings, passage_embeddings, *_negative_inputs(compact, negatives))


def _negative_inputs(compact: torch.Tensor, negatives: Sequence | None) -> tuple:
    """``()`` without negatives; else the embeddings of the present ones spread to [n, dim] (zeros where a pair has
    none, differentiable for the present rows) and the mask [n] of the pairs that have one."""
    if not negatives:
        return ()
    mask = torch.tensor([text is not None for text in negatives], device=compact.device)
    spread = compact.new_zeros((len(negatives), compact.shape[1]))
    return spread.index_copy(0, mask.nonzero()[:, 0], compact), mask


def cached_contrastive_loss(
    embed: Embed,
    queries: Sequence[str],
    passages: Sequence[str],
    loss_fn: Callable[..., LossOutput],
    chunk_size: int,
    forward_context: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    negatives: Sequence | None = None,
) -> LossOutput:
    """``contrastive_loss`` with the encoder run on at most ``chunk_size`` texts at a time (GradCache).

    Passes (a) and (b) run here; the returned ``loss`` is a detached scalar whose backward pass runs (c),
    as sentence-transformers' ``CachedMultipleNegativesRankingLoss`` does: ``loss.backward()`` (or
    ``scaler.scale(loss).backward()``) *adds* the same gradients to the encoder's and ``loss_fn``'s
    parameters as the plain path's backward would, scale included. Nothing is touched before that, so a
    caller can check the loss first and raise without a gradient changed.

    Args:
        embed: ``embed(texts, role)`` -> embeddings [n, dim] with autograd (e.g. ``BiEncoder.embed``). It
            runs in the module's current train/eval mode and must not keep per-batch state across forward
            passes (BatchNorm running statistics would be updated twice).
        queries / passages: the ``n`` pairs; pair ``i`` is (queries[i], passages[i]).
        loss_fn: maps query and passage embeddings [n, dim] (and hard negatives, see ``contrastive_loss``) to a
            LossOutput (e.g. InfoNCELoss).
        chunk_size: texts per ``embed`` call (>= 1).
        forward_context: factory of the context each ``embed`` call runs in, e.g.
            ``lambda: torch.autocast("cuda", dtype=torch.bfloat16)``. The loss is computed outside it.
        negatives: as in ``contrastive_loss``; the present ones are a third side, chunked like the others.
    """
    check_chunk_size(chunk_size)
    if len(queries) != len(passages):
        raise ValueError(f"got {len(queries)} queries but {len(passages)} passages")
    sides = [(list(queries), "query"), (list(passages), "passage")]
    if negatives:
        if len(negatives) != len(queries):
            raise ValueError(f"got {len(queries)} queries but {len(negatives)} negatives (None where a pair has none)")
        sides.append(([text for text in negatives if text is not None], "passage"))

    # (a) embeddings without autograd; each chunk's texts and random state are kept for (c)
    chunks: list[list[tuple[list[str], str, RandomState]]] = []
    embeddings: list[torch.Tensor] = []
    for texts, role in sides:
        side_chunks, side_embeddings = [], []
        for start in range(0, len(texts), chunk_size):
            chunk, state = texts[start : start + chunk_size], RandomState()
            with torch.no_grad(), forward_context():
                side_embeddings.append(embed(chunk, role))
            side_chunks.append((chunk, role, state))
        chunks.append(side_chunks)
        side = torch.cat(side_embeddings) if side_embeddings else embeddings[1].new_zeros((0, embeddings[1].shape[1]))
        embeddings.append(side.requires_grad_())

    # (b) the loss on the full batch and its gradients with respect to the embeddings and loss_fn's parameters
    out = loss_fn(*embeddings[:2], *_negative_inputs(embeddings[2], negatives) if negatives else ())
    loss_params = [p for p in (loss_fn.parameters() if isinstance(loss_fn, torch.nn.Module) else ()) if p.requires_grad]
    grads = torch.autograd.grad(out.loss, [*embeddings, *loss_params], allow_unused=True)

    # (c) when the caller backpropagates: re-embed each chunk with autograd (same randomness) and push its
    # cached gradient, times the incoming one (a loss scale), through the encoder
    def backward_hook(grad_output: torch.Tensor) -> None:
        for param, grad in zip(loss_params, grads[len(sides):]):
            if grad is not None:
                param.grad = grad * grad_output if param.grad is None else param.grad + grad * grad_output
        for side_chunks, side_grad in zip(chunks, grads[: len(sides)]):
            if side_grad is None:  # the loss does not depend on this side
                continue
            for (chunk, role, state), grad in zip(side_chunks, side_grad.split(chunk_size)):
                with state.replay(), torch.enable_grad(), forward_context():  # backward runs with grad off
                    chunk_embeddings = embed(chunk, role)
                chunk_embeddings.backward((grad * grad_output).to(chunk_embeddings.dtype))

    loss = out.loss.detach().requires_grad_()
    loss.register_hook(backward_hook)
    return dataclasses.replace(out, loss=loss)
