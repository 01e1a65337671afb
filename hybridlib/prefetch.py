"""Draw and tokenize the next training batch in a background thread while the GPU runs this one.

On a GPU the tokenizer is on the critical path: for xlm-roberta-base at batch 100 on an H200 it takes a
quarter to a third of a step (bench/results). A worker thread can take it off that path; it is opt-in
(``train(prefetch=True)``) because building the tensors holds the GIL, which the eager kernel launches
also need, and one measurement showed no gain.
Checkpoints stay exact: ``state_dict()`` is the sampler's state *before* the look-ahead batch was drawn,
i.e. the state after the last batch handed out, which is what an uninterrupted run would save.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Lookahead:
    """Wraps a batch sampler; ``next()`` returns ``prepare(batch)`` for the next batch, one batch ahead."""

    def __init__(self, sampler, prepare: Callable[[Any], Any]):
        self.sampler = sampler
        self.prepare = prepare
        self._batches: Iterator | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self._state_before_next: dict | None = None

    # checkpoint.py saves and restores the sampler through these two
    def state_dict(self) -> dict:
        if self._future is None:
            return self.sampler.state_dict()
        return self._state_before_next

    def load_state_dict(self, state: dict) -> None:
        if self._future is not None:
            raise RuntimeError("load the sampler state before the first batch is drawn")
        self.sampler.load_state_dict(state)

    def next(self):
        if self._future is None:
            self._batches = iter(self.sampler)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hybridlib-prefetch")
            self._schedule()
        result = self._future.result()
        self._schedule()
        return result

    def _schedule(self) -> None:
        # snapshot first: the worker is idle now, so the sampler is not being advanced
        self._state_before_next = self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else None
        self._future = self._pool.submit(lambda: self.prepare(next(self._batches)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
