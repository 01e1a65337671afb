"""What every benchmark here shares: the machine, interleaved timing, medians with their spread, one table.

Machines are shared and noisy, so compared paths are never timed one after the other: ``interleave`` runs
one round of every case in turn (the order rotating each round), and a ratio is the median of the
per-round ratios, reported with its spread (min and max over the rounds).
"""

from __future__ import annotations

import json
import os
import platform
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch


def say(*parts) -> None:
    print(*parts, flush=True)


def machine() -> dict:
    """CPU model and the instruction-set extensions that matter to kernels, cores, threads, versions."""
    info = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_start": os.getloadavg()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags"))
        wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
        info["cpu_flags"] = [flag for flag in wanted if flag in flags]
    except (OSError, StopIteration):
        info["cpu"], info["cpu_flags"] = platform.processor() or "unknown", []
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    for package in ("transformers", "sentence_transformers"):
        try:
            info[package] = __import__(package).__version__
        except ImportError:
            info[package] = None
    return info


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock interval covers it (no-op on CPU)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str | torch.device = "cpu") -> float:
    """Seconds ``fn()`` takes, GPU work included."""
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def interleave(cases: dict[str, Iterator[float]], rounds: int, warmup: int = 0,
               progress: str | None = None) -> dict[str, list[float]]:
    """Run ``rounds`` rounds; in each, every case produces one timing (``next(case)``), in rotating order.

    A case is an iterator whose ``next`` does one unit of work and returns its seconds. The first
    ``warmup`` rounds are run and dropped. Returns the measured timings per case.
    """
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            seconds = next(cases[name])
            if r >= warmup:
                times[name].append(seconds)
        if progress:
            say(f"  {progress} round {r + 1}/{warmup + rounds}: "
                + ", ".join(f"{name} {times[name][-1]:.3f} s" for name in names if r >= warmup and times[name])
                + ("" if r >= warmup else " (warm-up)"))
    return times


def spread(values: Iterable[float]) -> dict:
    """Median, min and max of ``values``."""
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def ratio(slow: list[float], fast: list[float]) -> dict:
    """``slow / fast`` per round (a speed ratio of ``fast`` over ``slow``): median and spread over rounds."""
    return spread(s / f for s, f in zip(slow, fast))


class StepByStep:
    """Runs a function that loops by itself (``run(batches, callback)``, e.g. ``hybridlib.training.loop.train``) one
    step at a time, so that it can be interleaved with other cases: ``next(stepper)`` lets it take exactly
    one batch and returns the seconds from handing that batch over to the end of its step (the callback).

    The function runs in a worker thread that is blocked whenever the harness is not waiting for it, so
    nothing else runs alongside it.
    """

    def __init__(self, run: Callable[[Iterator, Callable[[int, dict], None]], object], batches: list):
        self._go: queue.Queue = queue.Queue()
        self._done: queue.Queue = queue.Queue()
        self._started = 0.0

        def gated() -> Iterator:
            for batch in batches:
                self._go.get()
                self._started = time.perf_counter()
                yield batch

        def callback(step: int, record: dict) -> None:
            self._done.put(time.perf_counter() - self._started)

        def work() -> None:
            try:
                run(gated(), callback)
            except BaseException as err:  # surface it in the harness instead of a silent thread death
                self._done.put(err)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for the function to return (after its last batch), e.g. before the process exits."""
        self._thread.join()

    def __iter__(self) -> "StepByStep":
        return self

    def __next__(self) -> float:
        self._go.put(True)
        result = self._done.get()
        if isinstance(result, BaseException):
            raise result
        return result


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain fixed-width text table of ``rows`` (dicts) in the order of ``columns``."""
    cells = [[str(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(column), *(len(r[i]) for r in cells)) for i, column in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def write_report(path: str | Path, report: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=float) + "\n")
