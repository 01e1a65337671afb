"""GradCache: a contrastive loss over a batch larger than fits in memory, with exact gradients.

In-batch-negative losses couple every pair of the batch, so the batch cannot simply be split into
gradient-accumulation micro-batches. GradCache (Gao et al. 2021, "Scaling Deep Contrastive Learning
Batch Size under Memory Limited Setup") splits the computation at the embeddings instead:

    (a) embed all texts chunk by chunk without autograd (only the [n, dim] embeddings are kept);
    (b) compute the loss on those embeddings and backpropagate it to them: d loss / d embedding;
    (c) embed each chunk again, now with autograd, and backpropagate its cached embedding gradient
        through the encoder; parameter gradients accumulate over the chunks.

Peak activation memory is that of one chunk (plus the [n, n] loss), at the cost of a second forward
pass. Each chunk's random state (dropout) is recorded before (a) and replayed in (c), so the second
forward pass is the same function as the first and the gradients are exact: identical (up to
floating-point rounding) to embedding the same chunks with autograd and calling ``loss.backward()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ContextManager

import torch

from hybridlib.loss import LossOutput


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


def cached_contrastive_backward(
    model: torch.nn.Module,
    queries: Sequence[str],
    passages: Sequence[str],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], LossOutput],
    chunk_size: int,
    forward_context: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    scale_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    check_loss: Callable[[LossOutput], Any] | None = None,
) -> LossOutput:
    """Compute ``loss_fn`` on the embeddings of all pairs and accumulate its gradients, chunk by chunk.

    Has the effect of ``loss_fn(model.embed(queries), model.embed(passages)).loss.backward()`` with
    the encoder run on at most ``chunk_size`` texts at a time: gradients are *added* to the ``.grad``
    of the model's parameters and of ``loss_fn``'s (e.g. a learnable temperature), so zero them first.

    Args:
        model: a BiEncoder (``tokenize(texts, role)``; calling it on the tokenized batch gives the
            embeddings). Its train/eval mode is used as is. It must not keep per-batch state across
            forward passes (e.g. BatchNorm running statistics would be updated twice).
        queries / passages: the ``n`` pairs; pair ``i`` is (queries[i], passages[i]).
        loss_fn: maps query and passage embeddings [n, dim] to a LossOutput (e.g. InfoNCELoss).
        chunk_size: texts per encoder forward pass (>= 1).
        forward_context: factory of the context each encoder forward pass runs in, e.g.
            ``lambda: torch.autocast("cuda", dtype=torch.bfloat16)``. The loss is computed outside it.
        scale_loss: applied to the loss before it is backpropagated, e.g. ``GradScaler.scale`` for
            fp16 (all gradients then carry the scale, as with ``scaler.scale(loss).backward()``).
        check_loss: called with the LossOutput before any gradient is computed; raise in it to stop
            (e.g. on a non-finite loss) with no gradient touched.

    Returns:
        ``loss_fn``'s LossOutput, with ``loss`` detached (its graph is spent by then) and unscaled.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if len(queries) != len(passages):
        raise ValueError(f"got {len(queries)} queries but {len(passages)} passages")
    sides = [(list(queries), "query"), (list(passages), "passage")]

    # (a) embeddings without autograd; each chunk's tokens and random state are kept for (c)
    chunks: list[list[tuple[Any, RandomState]]] = []
    embeddings: list[torch.Tensor] = []
    for texts, role in sides:
        side_chunks, side_embeddings = [], []
        for start in range(0, len(texts), chunk_size):
            tokens = model.tokenize(texts[start : start + chunk_size], role)
            state = RandomState()
            with torch.no_grad(), forward_context():
                side_embeddings.append(model(tokens))
            side_chunks.append((tokens, state))
        chunks.append(side_chunks)
        embeddings.append(torch.cat(side_embeddings).requires_grad_())

    # (b) the loss on the full batch, backpropagated to the embeddings (and loss_fn's parameters)
    out = loss_fn(*embeddings)
    if check_loss is not None:
        check_loss(out)
    (scale_loss(out.loss) if scale_loss is not None else out.loss).backward()

    # (c) re-embed each chunk with autograd (same randomness) and push its cached gradient through
    for side_chunks, side_embeddings in zip(chunks, embeddings):
        if side_embeddings.grad is None:  # the loss does not depend on this side
            continue
        for (tokens, state), grad in zip(side_chunks, side_embeddings.grad.split(chunk_size)):
            with state.replay(), forward_context():
                chunk_embeddings = model(tokens)
            chunk_embeddings.backward(grad.to(chunk_embeddings.dtype))
    return dataclasses.replace(out, loss=out.loss.detach())
