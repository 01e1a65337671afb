"""The training loop: contrastive fine-tuning of a BiEncoder on a stream of hybrid batches.

One readable function, ``train``, plus small helpers that build the training state (optimizer,
learning-rate schedule) so that checkpoint/resume can rebuild the same state later, and the validation loss
(``validation_loss``) whose lowest value picks the weights a run keeps (``_BestWeights``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from ..data.tokens import PairTokens
from ..models.bi_encoder import varlen_available
from ..parameters import MIXED_PRECISION_MODES
from ..progress import progress_bar
from ..records import atomic_path, write_atomic
from .cached_loss import cached_contrastive_loss, check_chunk_size, contrastive_loss
from .checkpoint import checkpoint_step, load_checkpoint, save_checkpoint
from .distributed import barrier, broadcast_from_main, gradient_sync, mean_over_ranks, rank_batches, world
from .loss import InfoNCELoss, LossOutput


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


def resolve_packing(packing: bool | str, device: torch.device) -> bool:
    """``"auto"`` -> packed sequences on CUDA where PyTorch has its varlen attention kernel, else padded."""
    if packing == "auto":
        return device.type == "cuda" and varlen_available()
    if not isinstance(packing, bool):
        raise ValueError(f"packing must be True, False or 'auto', got {packing!r}")
    return packing


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
    loss_fn: Callable[[torch.Tensor, torch.Tensor], LossOutput] | None = None,
    mixed_precision: str = "auto",
    max_padding: float | None | str = "auto",
    packing: bool | str = "auto",
    cache_chunk_size: int | None = None,
    tokens: PairTokens | None = None,
    seed: int = 0,
    log_path: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    progress: bool = True,
    callback: Callable[[int, dict], Any] | None = None,
    validate: Callable[[], float] | None = None,
    validate_every: int = 0,
) -> list[dict]:
    """Fine-tune ``model`` (a BiEncoder) for ``steps`` optimizer steps on batches from ``sampler``.

    Each step: next batch -> loss with gradients (``batch_loss``: plain, or GradCache with
    ``cache_chunk_size``) -> backward -> gradients synchronised over ranks (torchrun) -> clipping at
    ``max_grad_norm`` (``None`` or 0: no clipping, norm still logged) -> AdamW step -> schedule step
    (linear warmup, then linear decay to 0) -> validation loss every ``validate_every`` steps -> log line ->
    checkpoint every ``checkpoint_every`` steps (and at a new lowest validation loss).

    Args:
        loss_fn: maps query and passage embeddings (and hard negatives with their mask, when the batches carry
            them) to a LossOutput; default ``InfoNCELoss()`` (temperature
            0.05, gathered across ranks under torchrun). If it is an ``nn.Module`` its parameters (a learnable
            temperature) are trained too. A loss with ``gather_across_ranks`` scores the global batch of all
            ranks (see ``hybridlib.training.distributed``); without it each rank's negatives are its own slice.
        mixed_precision: "auto" (bf16 autocast on CUDA, off on CPU), "bf16", "fp16" (with a GradScaler) or
            "no". Only the encoder runs under autocast; InfoNCELoss computes in fp32.
        max_padding: run each side of a batch as length-sorted sub-batches, each padded to its own longest
            text with at most this fraction of padding (``BiEncoder.embed``); same loss and gradients up to
            rounding, about half the encoder work on CPU for MLQA-R batches. ``None``: one pass padded to the
            longest text. ``"auto"``: 0.25 on CPU, ``None`` on GPU, where one large kernel beats several.
        packing: run each side of a batch as one padding-free packed sequence (``BiEncoder.embed_packed``):
            no FLOPs on padding. ``"auto"``: on with CUDA and PyTorch's varlen attention kernel (which has no
            attention-probability dropout), off on CPU (there the block-diagonal reference is slower than
            sub-batches). With packing, ``max_padding`` must be ``None`` or ``"auto"``.
        cache_chunk_size: embed at most this many texts per forward pass with GradCache
            (``hybridlib.training.cached_loss``): the loss and gradients of the whole batch with the activation memory
            of one chunk, for a second forward pass. Sub-batching by ``max_padding`` applies inside a chunk.
            With dropout active the masks are drawn per chunk, so the random draws (not the distribution)
            differ from a run without it. ``None``: off.
        tokens: the token ids of the sampler's pair table (``tokens.PairTokens.build``): batches are collated
            from them, so no step calls the tokenizer. ``None``: each batch is tokenized when drawn.
        seed: torch's random state at the start (dropout); under torchrun dropout is seeded per step and rank.
        log_path: JSONL file, one line per step, flushed every step (an interrupted run keeps it).
        checkpoint_dir / checkpoint_every: save the whole training state every N steps and after the last
            one; when ``checkpoint_dir`` already holds a checkpoint, continue from it (the step log is cut
            back to the checkpoint's step and continued), giving the same steps as an uninterrupted run.
        callback: called as ``callback(step, record)`` after every step.
        validate / validate_every: every ``validate_every`` steps (0: never) ``validate()`` gives a validation loss
            (``validation_loss``), logged as the step's ``validation_loss``. The weights of the lowest one are kept:
            in memory, and in ``<checkpoint_dir>-best.pt`` (written once per new best, after a checkpoint of that
            step, so a resumed run finds them), and are the model's weights when ``train`` returns.

    Under torch.distributed (torchrun) every rank draws the same global batch from its own copy of the
    sampler, embeds its slice and takes the same step; rank 0 alone writes the log and checkpoints and
    shows the progress bar; every rank returns the records and calls ``callback``.

    Returns:
        One dict per step (the lines of the JSONL log): step (1-based), kind, source (``Batch.source``),
        batch_size, kinds, query_langs, passage_langs (counts per value), negatives (pairs with a hard negative),
        negatives_dropped (by the sampler: relevant to a query of the batch), loss, accuracy,
        positive_similarity, negative_similarity, hard_negative_similarity (None without negatives),
        temperature, lr (used by this step), grad_norm (before clipping; None if non-finite, which fp16 loss
        scaling can produce and then skips the step), seconds (wall time of the step, batch sampling
        included), pairs_per_second, validation_loss (None on steps without validation).

    Raises:
        FloatingPointError: if the loss is NaN or infinite (the message names the step); nothing of that
            step is applied.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if checkpoint_every and checkpoint_dir is None:
        raise ValueError(f"checkpoint_every={checkpoint_every} needs a checkpoint_dir to write into")
    if bool(validate_every) != (validate is not None):
        raise ValueError(f"validate_every={validate_every} and validate={validate!r}: give both or neither")
    torch.manual_seed(seed)
    rank, world_size = world()
    main = rank == 0
    device = _device_of(model)
    loss_fn = (loss_fn if loss_fn is not None else InfoNCELoss(gather_across_ranks=True))
    loss_modules = [loss_fn.to(device)] if isinstance(loss_fn, nn.Module) else []
    step_loss = batch_loss(model, loss_fn, device, mixed_precision, max_padding, cache_chunk_size, packing)
    optimizer = make_optimizer(model, lr, weight_decay, extra_modules=loss_modules)
    scheduler = make_scheduler(optimizer, steps, warmup_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=resolve_mixed_precision(mixed_precision, device) == "fp16")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss_params = [p for module in loss_modules for p in module.parameters() if p.requires_grad]
    gathered = bool(getattr(loss_fn, "gather_across_ranks", False))
    sync_gradients = gradient_sync([p for p in params if all(p is not q for q in loss_params)], loss_params, gathered)
    report = _mean_over_ranks if world_size > 1 and not gathered else (lambda out: out)  # what the log shows
    clip_at = max_grad_norm if max_grad_norm else math.inf
    state = ([model, *loss_modules], optimizer, scheduler, scaler, sampler)

    done, records = 0, []
    if checkpoint_dir is not None and checkpoint_step(checkpoint_dir) is not None:
        done = load_checkpoint(checkpoint_dir, *state)
        records = _read_log(log_path)[:done] if log_path is not None else []
        if log_path is not None and len(records) < done:
            raise ValueError(f"{log_path} has {len(records)} steps but the checkpoint is at step {done}")
    barrier()  # every rank has read the log before rank 0 rewrites it
    best = _BestWeights([model, *loss_modules], checkpoint_dir, records, done, main)
    validation = _every(validate_every, validate)  # step -> validation loss, or None
    broadcast_from_main([model, *loss_modules])
    log = _StepLog(log_path, records) if log_path is not None and main else None
    bar = progress_bar(total=steps, initial=done, desc="train", disable=not progress or not main)
    attach_ids = tokens.attach if tokens is not None else functools.partial(_tokenized, model)
    batches = rank_batches(map(attach_ids, sampler), seed, done + 1)
    for module in [model, *loss_modules]:
        module.train()
    try:
        for step in range(done + 1, steps + 1):
            started = time.perf_counter()
            batch, local = next(batches)
            step_lr = scheduler.get_last_lr()[0]  # the lr this step's optimizer.step() uses
            optimizer.zero_grad(set_to_none=True)
            out = step_loss(local)
            shown = report(out)
            loss_value = _finite_loss(shown, step, steps)  # before any gradient is computed
            scaler.scale(out.loss).backward()
            sync_gradients()
            scaler.unscale_(optimizer)  # clip (and log) the true gradient norm under fp16
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip_at))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()

            record = _step_record(step, batch, shown, loss_value, step_lr, grad_norm, time.perf_counter() - started)
            record["validation_loss"] = validation(step)
            records.append(record)
            if log is not None:
                log.write(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{shown.accuracy:.2f}")
            is_best = best.offer(step, record["validation_loss"])
            if checkpoint_every and (step % checkpoint_every == 0 or step == steps or is_best) and main:
                save_checkpoint(checkpoint_dir, step, *state)  # rank 0 writes the checkpoint of every rank
            if is_best and main:
                best.write()  # after its step's checkpoint: a resumed run never starts before its best
            if callback is not None:
                callback(step, record)
        best.restore()  # the weights of the lowest validation loss, if there was a validation
    finally:
        bar.close()
        if log is not None:
            log.close()
        for module in [model, *loss_modules]:
            module.eval()
    return records


def batch_loss(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], LossOutput],
    device: torch.device,
    mixed_precision: str = "auto",
    max_padding: float | None | str = "auto",
    cache_chunk_size: int | None = None,
    packing: bool | str = "auto",
) -> Callable[[Any], LossOutput]:
    """The training step's first half, chosen once: ``batch -> LossOutput`` whose ``loss.backward()``
    gives every gradient. Plain (``cached_loss.contrastive_loss``) or, with ``cache_chunk_size``, GradCache
    (``cached_loss.cached_contrastive_loss``); both embed the batch's token ids through ``model.embed_ids``
    under the mixed-precision autocast, and compute the loss outside it."""
    packed = resolve_packing(packing, device)
    if packed and max_padding not in (None, "auto"):
        raise ValueError(f"packing leaves no padding to bound: max_padding={max_padding!r} needs packing off")
    if max_padding == "auto":
        max_padding = 0.25 if device.type == "cpu" and not packed else None

    def embed(ids: list[list[int]], role: str) -> torch.Tensor:  # the ids carry the role's prefix already
        return model.embed_ids(ids, max_padding=max_padding, packed=packed)

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_mixed_precision(mixed_precision, device))
    forward_context = (lambda: torch.autocast(device_type=device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    if cache_chunk_size is None:
        return lambda batch: contrastive_loss(embed, batch.query_ids, batch.passage_ids, loss_fn, forward_context,
                                              batch.negative_ids)
    check_chunk_size(cache_chunk_size)  # now, not at the first step
    return lambda batch: cached_contrastive_loss(embed, batch.query_ids, batch.passage_ids, loss_fn,
                                                 cache_chunk_size, forward_context, batch.negative_ids)


def validation_loss(model: nn.Module, loss_fn: Callable[..., LossOutput], batches: list,
                    mixed_precision: str = "auto", packing: bool | str = "auto") -> Callable[[], float]:
    """``train``'s ``validate``: the mean loss over fixed ``batches`` (token ids attached), in eval mode, no grad.

    ``loss_fn`` should not gather across ranks: under torchrun every rank scores the whole batches (same result).
    """
    step_loss = batch_loss(model, loss_fn, _device_of(model), mixed_precision, packing=packing)

    def validate() -> float:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return sum(step_loss(batch).loss.item() for batch in batches) / len(batches)
        finally:
            model.train(was_training)

    return validate


def best_weights_path(checkpoint_dir: str | Path) -> Path:
    """Where ``train`` keeps the weights of the lowest validation loss: beside the checkpoint folder."""
    return Path(checkpoint_dir).with_name(f"{Path(checkpoint_dir).name}-best.pt")


def _every(every: int, validate: Callable[[], float] | None) -> Callable[[int], float | None]:
    if not every:
        return lambda step: None
    return lambda step: validate() if step % every == 0 else None


class _BestWeights:
    """The trainable weights at the lowest validation loss so far: in memory, and in ``<checkpoint_dir>-best.pt``.

    On a resume the best so far is read from the kept step log; its weights from the file, or, when the best is
    the checkpoint's own step (the run stopped between the checkpoint and the file), from the restored model.
    """

    def __init__(self, modules: list[nn.Module], checkpoint_dir, records: list[dict], done: int, main: bool):
        self.params = {f"{i}.{name}": p for i, m in enumerate(modules) for name, p in m.named_parameters()
                       if p.requires_grad}
        self.path = best_weights_path(checkpoint_dir) if checkpoint_dir is not None else None
        self.step, self.loss, self.weights = None, math.inf, None
        for record in records:
            if record.get("validation_loss") is not None and record["validation_loss"] < self.loss:
                self.step, self.loss = record["step"], record["validation_loss"]
        if self.step is None:
            return
        stored = (torch.load(self.path, map_location="cpu", weights_only=True)
                  if self.path is not None and self.path.exists() else None)
        if stored is not None and stored["step"] == self.step:
            self.weights = stored["parameters"]
        elif self.step == done:
            self.weights = self._copy()
            if main:
                self.write()
        else:
            raise ValueError(f"the step log's lowest validation loss is at step {self.step}, but {self.path} does not "
                             "hold its weights; delete the checkpoint to start the run over")

    def _copy(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().to("cpu", copy=True) for name, p in self.params.items()}

    def offer(self, step: int, loss: float | None) -> bool:
        """Keep the weights if ``loss`` is a new lowest; whether it is."""
        if loss is None or not loss < self.loss:
            return False
        self.step, self.loss, self.weights = step, loss, self._copy()
        return True

    def write(self) -> None:
        """The best weights into the file (atomically: written beside it, then renamed)."""
        if self.path is None:
            return
        with atomic_path(self.path) as tmp:
            torch.save({"step": self.step, "loss": self.loss, "parameters": self.weights}, tmp)

    def restore(self) -> None:
        if self.weights is not None:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(self.weights[name])


def _tokenized(model: nn.Module, batch):
    """A batch with token ids from the tokenizer (for samplers without a ``PairTokens`` table)."""
    present = [text for text in batch.negatives if text is not None]
    negatives = iter(model.token_ids(present, "passage") if present else [])
    return dataclasses.replace(batch, query_ids=model.token_ids(batch.queries, "query"),
                               passage_ids=model.token_ids(batch.passages, "passage"),
                               negative_ids=[None if text is None else next(negatives) for text in batch.negatives])


def _step_record(step: int, batch, out: LossOutput, loss: float, lr: float, grad_norm: float, seconds: float) -> dict:
    """One line of the step log."""
    return {
        "step": step,
        "kind": batch.kind,
        "source": batch.source,
        "batch_size": len(batch),
        "kinds": dict(Counter(batch.kinds)),
        "query_langs": dict(Counter(batch.query_langs)),
        "passage_langs": dict(Counter(batch.passage_langs)),
        "negatives": sum(text is not None for text in batch.negatives),
        "negatives_dropped": sum(batch.negative_dropped),
        "loss": loss,
        "accuracy": out.accuracy,
        "positive_similarity": out.positive_similarity,
        "negative_similarity": out.negative_similarity,
        "hard_negative_similarity": out.hard_negative_similarity,
        "temperature": out.temperature,
        "lr": lr,
        "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
        "seconds": seconds,
        "pairs_per_second": len(batch) / seconds,
    }


class _StepLog:
    """The JSONL step log, one flushed line per step. A resumed run's kept steps are written to a temporary
    file that replaces the log in one rename, so a kill at any moment leaves a complete log behind."""

    def __init__(self, path: str | Path, kept: list[dict]):
        path = write_atomic(path, "".join(json.dumps(record) + "\n" for record in kept))
        self._file = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _finite_loss(out: LossOutput, step: int, steps: int) -> float:
    """The loss as a float; raises FloatingPointError (naming the step) if it is NaN or infinite."""
    loss_value = out.loss.item()
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"non-finite loss ({loss_value}) at step {step} of {steps}")
    return loss_value


def _mean_over_ranks(out: LossOutput) -> LossOutput:
    """Local negatives under torch.distributed: the loss (detached) and diagnostics averaged over the ranks."""
    hard = out.hard_negative_similarity  # None on a rank whose slice has no hard negative
    values = [out.loss.item(), out.accuracy, out.positive_similarity, out.negative_similarity, out.temperature,
              0.0 if hard is None else hard, float(hard is not None)]
    loss, *diagnostics, hard_sum, ranks_with_hard = mean_over_ranks(values, device=out.loss.device)
    return dataclasses.replace(
        out, loss=torch.tensor(loss), **dict(zip(("accuracy", "positive_similarity", "negative_similarity",
                                                   "temperature"), diagnostics)),
        hard_negative_similarity=hard_sum / ranks_with_hard if ranks_with_hard else None,
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
