"""Data-parallel training on several GPUs (or CPU processes) with PyTorch's own engine, torchrun.

    torchrun --nproc_per_node=8 -m hybridlib.experiment run.yaml

(``run.yaml``: a flat parameter file, as for ``python -m hybridlib.experiment``) starts one process
("rank") per GPU. Every rank builds the same sampler with the same seed, so every
rank draws the same *global* batch of ``batch_size`` pairs and encodes only its own contiguous slice
(``shard``): the per-GPU batch is ``batch_size / world size``. The slices' embeddings are gathered
(``gather_with_grad``), so every rank computes the same InfoNCE loss over the whole global batch:
the negatives of a query are all the other passages of the global batch, as in one process. Each
rank backpropagates into its own texts only; summing the parameter gradients over the ranks
(``all_reduce_gradients``) gives the gradient of the global loss, and every rank then takes the
same optimizer step, so the parameters stay identical without a DistributedDataParallel wrapper.

The gathering is the loss's business (``InfoNCELoss(gather_across_ranks=True)``, what a run uses).
Without it each rank's loss uses its local slice only as negatives, and the gradients are averaged
instead: plain data parallelism, with ``world size`` times fewer negatives per query.
``gradient_sync`` picks the right reduction once, before the training loop.

Rank 0 alone writes the step log and checkpoints (every rank loads a checkpoint to resume) and, in
``run_experiment``, evaluates and saves; dropout is seeded per step and rank. Backend: NCCL on
CUDA, gloo on CPU (the tests run two gloo processes on CPU).
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta

import torch
import torch.distributed as dist

# Gradients are all-reduced in flat buckets of about this many elements (fewer, larger messages).
BUCKET_NUMEL = 2**23


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process is rank 0 (or the only process): the one that logs, saves and evaluates."""
    return world()[0] == 0


def init_from_env(device: str = "auto") -> torch.device | None:
    """Join the process group that torchrun describes in the environment; returns the device to use.

    Acts only when ``WORLD_SIZE`` > 1 (set by torchrun) and no process group exists yet; returns
    None otherwise (one process: keep the usual device choice). The backend is NCCL when CUDA is
    used, with this rank on GPU ``LOCAL_RANK``, else gloo on CPU. ``device``: "auto" (CUDA when
    available), "cpu" or "cuda" (a device index is ignored: each rank takes its ``LOCAL_RANK``).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return None
    kind = torch.device(device).type if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        target = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(target)
        dist.init_process_group(backend="nccl", device_id=target)
        return target
    dist.init_process_group(backend="gloo")
    return torch.device("cpu")


def barrier(group=None) -> None:
    """Wait until every rank gets here (no-op in one process)."""
    if world()[1] > 1:
        dist.barrier(group=group)


def long_wait_group(timeout: timedelta = timedelta(hours=24)):
    """A gloo group for a ``barrier`` that may outlast the backend's collective timeout.

    The default timeouts (30 minutes for gloo, 10 for NCCL) guard training collectives against
    hangs, but ranks that wait while rank 0 evaluates a large benchmark may wait longer. Creating
    a group is collective: every rank calls this at the same point, before the long wait. None in
    one process.
    """
    if world()[1] == 1:
        return None
    return dist.new_group(backend="gloo", timeout=timeout)


def shutdown() -> None:
    """Destroy the default process group if there is one (the end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch, rank: int, world_size: int):
    """Rank ``rank``'s contiguous slice of a global batch (a ``sampler.Batch``; same class returned).

    Slices cover the batch in rank order without overlap, so gathering the slices' embeddings in
    rank order gives the global batch's order back.
    """
    n = len(batch)
    if n % world_size:
        raise ValueError(
            f"batch_size {n} is not divisible by the world size {world_size}: each of the {world_size} "
            f"processes encodes batch_size / {world_size} pairs; choose a batch_size that is a multiple "
            f"of {world_size} (e.g. {max(world_size, n - n % world_size)}) or change --nproc_per_node"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    size = n // world_size
    part = slice(rank * size, (rank + 1) * size)
    return type(batch)(**{f.name: getattr(batch, f.name)[part] for f in dataclasses.fields(batch)})


def check_same_batch(batch) -> None:
    """Raise RuntimeError unless every rank holds the same global batch (same groups in the same order).

    Guards against ranks whose samplers were built with different seeds or data: their slices would
    no longer partition one batch (a group could repeat, a false negative). One small all-reduce.
    """
    rank, world_size = world()
    if world_size == 1:
        return
    digest = zlib.crc32("\x1f".join(map(str, batch.groups)).encode("utf-8"))
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    both = torch.tensor([digest, -digest], dtype=torch.int64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)  # max(d) == d and max(-d) == -d: all equal
    if both.tolist() != [digest, -digest]:
        raise RuntimeError(
            f"rank {rank} drew a different global batch than another rank: every rank must build the "
            "same sampler (same pairs, batch_size and seed)"
        )


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns this rank's rows of the incoming gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, world_size = world()
        ctx.rows = (rank * len(x), (rank + 1) * len(x))
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every rank computes the same loss on the gathered tensor, so ``grad`` is already the full
        # d loss / d gathered on each rank: no communication, only this rank's rows.
        start, stop = ctx.rows
        return grad[start:stop]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` ([n_local, dim], the same shape on every rank) as [n_global, dim] in rank order.

    Differentiable for this rank's rows: the backward pass gives ``x`` its rows of the gradient.
    That is correct when every rank computes the *same* loss from the gathered tensor (as the
    training loop does); the parameter gradients must then be summed over ranks. Identity in one
    process.
    """
    if world()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_gradients(params: Iterable[torch.nn.Parameter], average: bool) -> None:
    """Sum (``average=False``) or average (``average=True``) the ``.grad`` of ``params`` over ranks, in place.

    - With gathered embeddings every rank computes the same global loss but backpropagates through
      its own texts only, so each holds a part of the gradient: sum (``average=False``).
    - Without gathering each rank's loss is the mean over its local pairs, and the global loss is
      the mean of those: average (``average=True``).

    Every rank must pass the same parameters in the same order. A parameter without a gradient on
    every rank stays without one; one with a gradient on some ranks only gets zeros elsewhere.
    No-op in one process.
    """
    rank, world_size = world()
    params = list(params)
    if world_size == 1 or not params:
        return
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    grads = []
    for p, wanted in zip(params, has_grad.tolist()):
        if wanted:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
    for bucket in _buckets(grads):
        single = len(bucket) == 1 and bucket[0].is_contiguous()
        flat = bucket[0] if single else torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)  # SUM (gloo has no AVG)
        if average:
            flat.div_(world_size)
        if not single:
            for g, part in zip(bucket, flat.split([g.numel() for g in bucket])):
                g.copy_(part.view_as(g))


def gradient_sync(encoder_params: list, loss_params: list, gathered: bool) -> Callable[[], None]:
    """What to do with the gradients after each backward pass so that every rank holds the global gradient.

    With a gathered loss every rank computed the same global loss but backpropagated through its own texts
    only: the encoder gradients are summed; the loss's own parameters (a learnable temperature) saw the whole
    loss on every rank, so theirs are averaged (all equal). With local losses everything is averaged (the
    global loss is the mean of the local ones). A no-op in one process.
    """
    if world()[1] == 1:
        return lambda: None
    if not gathered:
        everything = [*encoder_params, *loss_params]
        return lambda: all_reduce_gradients(everything, average=True)

    def sync() -> None:
        all_reduce_gradients(encoder_params, average=False)
        all_reduce_gradients(loss_params, average=True)

    return sync


def rank_batches(sampler: Iterable, seed: int, first_step: int) -> Iterator[tuple]:
    """``(global batch, this rank's slice of it)`` for steps ``first_step, first_step + 1, ...``.

    Under several processes it also checks that every rank drew the same global batch and seeds dropout
    per step and rank (``step_seed``: different masks per rank, exact on resume). In one process the slice
    is the batch itself and the random state is left alone.
    """
    rank, world_size = world()
    for step, batch in enumerate(sampler, first_step):
        if world_size == 1:
            yield batch, batch
            continue
        check_same_batch(batch)
        torch.manual_seed(step_seed(seed, step, rank))
        yield batch, shard(batch, rank, world_size)


def _buckets(grads: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Consecutive gradients grouped by dtype and device, about BUCKET_NUMEL elements per group."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for g in grads:
        last = buckets[-1] if buckets else None
        if last is None or size + g.numel() > BUCKET_NUMEL or g.dtype != last[0].dtype or g.device != last[0].device:
            buckets.append([g])
            size = g.numel()
        else:
            last.append(g)
            size += g.numel()
    return buckets


def mean_over_ranks(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """The element-wise mean of ``values`` over the ranks (``values`` itself in one process)."""
    world_size = world()[1]
    if world_size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / world_size).tolist()


def broadcast_from_main(modules: Iterable[torch.nn.Module]) -> None:
    """Copy rank 0's parameters and buffers to every rank (as DistributedDataParallel does at start).

    Makes the starting point identical even where loading is not deterministic (e.g. weights a
    checkpoint lacks and ``from_pretrained`` initialises at random). No-op in one process.
    """
    if world()[1] == 1:
        return
    with torch.no_grad():
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one rank at one step: different dropout masks per rank, exact on resume."""
    return zlib.crc32(f"{seed}/{step}/{rank}".encode())
