"""The training loop: contrastive fine-tuning of a BiEncoder on a stream of hybrid batches.

One readable function, ``train``, plus small helpers that build the training state (optimizer,
learning-rate schedule) so that checkpoint/resume can rebuild the same state later.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from hybridlib.cached_loss import cached_contrastive_backward
from hybridlib.checkpoint import checkpoint_step, load_checkpoint, save_checkpoint
from hybridlib.distributed import (
    all_reduce_gradients,
    barrier,
    broadcast_from_main,
    check_same_batch,
    gather_with_grad,
    mean_over_ranks,
    shard,
    step_seed,
    world,
)
from hybridlib.loss import InfoNCELoss, LossOutput
from hybridlib.prefetch import Lookahead

MIXED_PRECISION_MODES = ("auto", "bf16", "fp16", "no")


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    extra_modules: Iterable[nn.Module] = (),
) -> torch.optim.AdamW:
    """AdamW over the parameters of ``model`` (and e.g. a loss with a learnable temperature).

    Usual convention: weight decay on weight matrices only; biases, LayerNorm weights and other
    parameters with fewer than 2 dimensions (such as a logit scale) are not decayed.
    Parameters shared between modules (tied embeddings) are included once.
    """
    decay, no_decay, seen = [], [], set()
    for module in [model, *extra_modules]:
        for submodule in module.modules():
            is_norm = isinstance(submodule, nn.LayerNorm) or "norm" in type(submodule).__name__.lower()
            for name, param in submodule.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                if is_norm or name.endswith("bias") or param.ndim < 2:
                    no_decay.append(param)
                else:
                    decay.append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel updates all tensors in one pass (CPU and CUDA): on CPU it halves the step
    # time of the default for-loop, which dominates when the 250k-row embedding table is trained.
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=True)


def resolve_warmup_steps(warmup_steps: int | float, steps: int) -> int:
    """Warmup as a number of steps: an int is taken as is, a float in [0, 1) as a fraction of steps."""
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, float)):
        raise TypeError(f"warmup_steps must be an int or a float fraction, got {warmup_steps!r}")
    if isinstance(warmup_steps, float):
        if not 0.0 <= warmup_steps < 1.0:
            raise ValueError(f"a fractional warmup_steps must be in [0, 1), got {warmup_steps}")
        return int(round(warmup_steps * steps))
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    return warmup_steps


def make_scheduler(
    optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int | float = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 to the base lr over the warmup steps, then linear decay to 0 at ``steps``.

    The lr used by (0-based) step ``i`` is ``lr * i / warmup`` during warmup and
    ``lr * (steps - i) / (steps - warmup)`` after it.
    """
    return get_linear_schedule_with_warmup(optimizer, resolve_warmup_steps(warmup_steps, steps), steps)


def resolve_mixed_precision(mixed_precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` on CUDA, ``"no"`` elsewhere; other modes are returned checked."""
    if mixed_precision not in MIXED_PRECISION_MODES:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION_MODES}, got {mixed_precision!r}")
    if mixed_precision == "auto":
        return "bf16" if device.type == "cuda" else "no"
    return mixed_precision


def train(
    model: nn.Module,
    sampler: Iterable,
    steps: int,
    lr: float = 3e-5,
    weight_decay: float = 0.01,
    warmup_steps: int | float = 0,
    max_grad_norm: float | None = 1.0,
    temperature: float = 0.05,
    learnable_temperature: bool = False,
    symmetric: bool = False,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], LossOutput] | None = None,
    mixed_precision: str = "auto",
    log_path: str | Path | None = None,
    progress: bool = True,
    seed: int = 0,
    callback: Callable[[int, dict], Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    cache_chunk_size: int | None = None,
    max_padding: float | None | str = "auto",
    gather_embeddings: bool = True,
    prefetch: bool = False,
) -> list[dict]:
    """Fine-tune ``model`` (a BiEncoder) for ``steps`` optimizer steps on batches from ``sampler``.

    Each step: next batch -> ``model.embed`` of queries and passages -> ``loss_fn`` -> backward ->
    gradient clipping at ``max_grad_norm`` (``None`` or 0: no clipping, norm still logged) ->
    AdamW step -> schedule step (linear warmup, then linear decay to 0).
    With ``cache_chunk_size`` the embed/loss/backward part is done by GradCache instead (see below).

    Args:
        loss_fn: defaults to ``InfoNCELoss(temperature, learnable_temperature, symmetric)``; when
            given, those three arguments are ignored. If it is an ``nn.Module`` its parameters
            (a learnable temperature) are trained too.
        mixed_precision: "auto" (bf16 autocast on CUDA, off on CPU), "bf16", "fp16" (with a
            GradScaler) or "no". Only the encoder runs under autocast; InfoNCELoss computes in fp32.
        log_path: JSONL file, one line per step, flushed every step (an interrupted run keeps it).
        callback: called as ``callback(step, record)`` after every step.
        checkpoint_dir / checkpoint_every: save the whole training state every N steps and after the
            last one; when ``checkpoint_dir`` already holds a checkpoint, continue from it (the step log
            is cut back to the checkpoint's step and continued), giving the same steps as an
            uninterrupted run.
        cache_chunk_size: run the encoder on at most this many texts at a time with GradCache
            (``hybridlib.cached_loss``): embed all chunks without autograd, compute the loss on the
            whole batch and its gradient with respect to the embeddings, then re-embed each chunk with
            its dropout replayed and backpropagate that gradient. The loss and gradients are those of
            the whole batch (in-batch negatives included), with the activation memory of one chunk and
            a second forward pass as the price. ``None``: one forward pass over the whole batch.
            With dropout active the masks are drawn per chunk, so the random draws (not the
            distribution) differ from a run without it.
        max_padding: run each side of a batch as length-sorted sub-batches, each padded to its own
            longest text with at most this fraction of padding (``BiEncoder.embed``); same loss and
            gradients up to rounding, about half the encoder work on CPU for MLQA-R batches.
            ``None``: one pass padded to the longest text. ``"auto"``: 0.25 on CPU, ``None`` on GPU,
            where one large kernel beats several small ones.
        prefetch: draw and tokenize the next batch in a background thread during the current step
            (``hybridlib.prefetch``); same batches, same results, checkpoints exact. Off by default:
            on an H200 tokenizing is a quarter to a third of an xlm-roberta-base step, but the
            worker's tensor building competes for the GIL with eager kernel launches and the measured
            step time did not improve (bench/results/gpu-h200-xlmr-base-prefetch.json). Only used
            with ``max_padding=None`` and without ``cache_chunk_size``.
        gather_embeddings: only under torch.distributed with several processes (torchrun; see
            ``hybridlib.distributed``). Every rank draws the same global batch from its own copy of
            the sampler and embeds its slice of it. True: the slices' embeddings are gathered and
            every rank computes the loss over the whole global batch (negatives from all of it, the
            same loss and gradients as one process); the parameter gradients are summed over the
            ranks. False: each rank's loss uses its local slice only and the gradients are averaged
            (the logged loss and diagnostics are then averages over the ranks). Either way every
            rank takes the same step; only rank 0 writes the log and checkpoints and shows the
            progress bar, and every rank returns the records and calls ``callback``. Dropout is
            seeded per step and rank. Works with ``cache_chunk_size`` (each rank chunks its slice).

    Returns:
        One dict per step (the lines of the JSONL log): step (1-based), kind, batch_size, kinds,
        query_langs, passage_langs (counts per value), loss, accuracy, positive_similarity,
        negative_similarity, temperature, lr (used by this step), grad_norm (before clipping;
        None if non-finite, which fp16 loss scaling can produce and then skips the step),
        seconds (wall time of the step, batch sampling included), pairs_per_second.

    Raises:
        FloatingPointError: if the loss is NaN or infinite (the message names the step).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if cache_chunk_size is not None and (
        isinstance(cache_chunk_size, bool) or not isinstance(cache_chunk_size, int) or cache_chunk_size < 1
    ):
        raise ValueError(f"cache_chunk_size must be None or an int >= 1, got {cache_chunk_size!r}")
    torch.manual_seed(seed)
    rank, world_size = world()
    distributed = world_size > 1
    gather = distributed and gather_embeddings
    local_only = distributed and not gather_embeddings  # each rank's loss is over its own slice only
    device = _device_of(model)
    precision = resolve_mixed_precision(mixed_precision, device)
    if max_padding == "auto":
        max_padding = 0.25 if device.type == "cpu" else None
    prefetch = bool(prefetch) and max_padding is None and cache_chunk_size is None  # those paths tokenize inside
    if loss_fn is None:
        loss_fn = InfoNCELoss(temperature, learnable_temperature=learnable_temperature, symmetric=symmetric)
    loss_modules = [loss_fn.to(device)] if isinstance(loss_fn, nn.Module) else []

    optimizer = make_optimizer(model, lr, weight_decay, extra_modules=loss_modules)
    scheduler = make_scheduler(optimizer, steps, warmup_steps)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss_param_ids = {id(p) for module in loss_modules for p in module.parameters()}
    step_loss = loss_fn
    if gather:
        def step_loss(q: torch.Tensor, p: torch.Tensor) -> LossOutput:  # the loss over the global batch
            return loss_fn(gather_with_grad(q), gather_with_grad(p))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    lookahead = None
    if prefetch:
        def prepare(batch):  # runs in the worker thread: draw, shard, tokenize (no collectives, no RNG)
            local = shard(batch, rank, world_size) if distributed else batch
            return batch, local, (model.tokenize(local.queries, "query"), model.tokenize(local.passages, "passage"))

        lookahead = Lookahead(sampler, prepare)
    state = ([model, *loss_modules], optimizer, scheduler, scaler, lookahead or sampler)
    done = 0
    records: list[dict] = []
    if checkpoint_dir is not None and checkpoint_step(checkpoint_dir) is not None:
        done = load_checkpoint(checkpoint_dir, *state)
        records = _read_log(log_path)[:done] if log_path is not None else []
        if log_path is not None and len(records) < done:
            raise ValueError(f"{log_path} has {len(records)} steps but the checkpoint is at step {done}")
    if distributed:
        barrier()  # every rank has read the log before rank 0 rewrites it
        broadcast_from_main([model, *loss_modules])
    main = rank == 0
    batches = None if lookahead is not None else iter(sampler)
    log_file = None
    bar = tqdm(total=steps, initial=done, desc="train", disable=not progress or not main)
    model.train()
    for module in loss_modules:
        module.train()
    try:
        if log_path is not None and main:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            log_file = open(log_path, "w", encoding="utf-8")
            log_file.writelines(json.dumps(record) + "\n" for record in records)  # resumed: the kept steps
            log_file.flush()
        for step in range(done + 1, steps + 1):
            started = time.perf_counter()
            if lookahead is not None:
                batch, local, tokens = lookahead.next()  # tokenized in the background during the last step
            else:
                batch, tokens = next(batches), None
                local = shard(batch, rank, world_size) if distributed else batch  # this rank's slice
            step_lr = scheduler.get_last_lr()[0]  # the lr this step's optimizer.step() uses
            if distributed:
                check_same_batch(batch)
                torch.manual_seed(step_seed(seed, step, rank))  # own dropout masks per rank; exact on resume

            if cache_chunk_size is None:
                with _autocast(device, autocast_dtype):
                    if tokens is not None:
                        q, p = model(tokens[0]), model(tokens[1])
                    else:
                        q = model.embed(local.queries, "query", max_padding=max_padding)
                        p = model.embed(local.passages, "passage", max_padding=max_padding)
                out = step_loss(q, p)
                report = _mean_over_ranks(out) if local_only else out  # what the step log shows
                loss_value = _finite_loss(report, step, steps)

                optimizer.zero_grad(set_to_none=True)
                scaler.scale(out.loss).backward()
            else:
                optimizer.zero_grad(set_to_none=True)  # GradCache accumulates into .grad
                out = cached_contrastive_backward(
                    model, local.queries, local.passages, step_loss, cache_chunk_size,
                    forward_context=lambda: _autocast(device, autocast_dtype),
                    scale_loss=scaler.scale,
                    # before any backward; local losses are checked once averaged over the ranks (below)
                    check_loss=None if local_only else (lambda result: _finite_loss(result, step, steps)),
                )
                report = _mean_over_ranks(out) if local_only else out
                loss_value = _finite_loss(report, step, steps)
            if gather:
                # each rank holds its texts' part of the encoder gradient: sum. The loss's own
                # parameters (a learnable temperature) saw the whole global loss on every rank.
                all_reduce_gradients([p for p in params if id(p) not in loss_param_ids], average=False)
                all_reduce_gradients([p for p in params if id(p) in loss_param_ids], average=True)
            elif local_only:
                all_reduce_gradients(params, average=True)  # the global loss is the mean of the local ones
            scaler.unscale_(optimizer)  # clip (and log) the true gradient norm under fp16
            clip_at = max_grad_norm if max_grad_norm else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip_at))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            seconds = time.perf_counter() - started

            record = {
                "step": step,
                "kind": batch.kind,
                "batch_size": len(batch),
                "kinds": dict(Counter(batch.kinds)),
                "query_langs": dict(Counter(batch.query_langs)),
                "passage_langs": dict(Counter(batch.passage_langs)),
                "loss": loss_value,
                "accuracy": report.accuracy,
                "positive_similarity": report.positive_similarity,
                "negative_similarity": report.negative_similarity,
                "temperature": report.temperature,
                "lr": step_lr,
                "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
                "seconds": seconds,
                "pairs_per_second": len(batch) / seconds,
            }
            records.append(record)
            if log_file is not None:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{report.accuracy:.2f}")
            due = checkpoint_dir is not None and checkpoint_every and (step % checkpoint_every == 0 or step == steps)
            if due and main:  # rank 0 writes the checkpoint of every rank
                save_checkpoint(checkpoint_dir, step, *state)
            if callback is not None:
                callback(step, record)
    finally:
        bar.close()
        if lookahead is not None:
            lookahead.close()
        if log_file is not None:
            log_file.close()
        model.eval()
        for module in loss_modules:
            module.eval()
    return records


def _finite_loss(out: LossOutput, step: int, steps: int) -> float:
    """The loss as a float; raises FloatingPointError (naming the step) if it is NaN or infinite."""
    loss_value = out.loss.item()
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"non-finite loss ({loss_value}) at step {step} of {steps}")
    return loss_value


def _mean_over_ranks(out: LossOutput) -> LossOutput:
    """Local negatives under torch.distributed: the loss (detached) and diagnostics averaged over the ranks."""
    values = [out.loss.item(), out.accuracy, out.positive_similarity, out.negative_similarity, out.temperature]
    loss, *diagnostics = mean_over_ranks(values, device=out.loss.device)
    return dataclasses.replace(
        out, loss=torch.tensor(loss), **dict(zip(("accuracy", "positive_similarity", "negative_similarity",
                                                   "temperature"), diagnostics))
    )


def _read_log(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _device_of(model: nn.Module) -> torch.device:
    """The model's device (BiEncoder has a ``device`` property; fall back to its first parameter)."""
    device = getattr(model, "device", None)
    if device is None:
        device = next(model.parameters()).device
    return torch.device(device)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast context for the encoder forward pass, or a no-op when mixed precision is off."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
