"""Run records on disk (``params.json``, ``metrics.json``, ``sweep.json``): read strictly, set aside when damaged.

A record truncated by a full disk, a sync tool or a crash outside the project must neither stop a sweep nor
pass for a finished run. A damaged one is renamed to ``<name>.damaged-<UTC time>`` next to where it was:
kept for inspection, never deleted, and ignored by everything that reads a sweep back.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from .parameters import DEFAULTS, TASK_PARAMETERS, differing_params

UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # every time a record holds: UTC, to the second
SET_ASIDE = ".damaged-"  # in the name of everything set aside; readers of a sweep skip such folders
RUN_RECORDS = ("params.json", "metrics.json")
METRICS_KEYS = ("run_name", "params", "benchmarks")  # what every reader of a metrics.json relies on


def utc_now() -> str:
    """The time now as records hold it (``UTC_FORMAT``)."""
    return time.strftime(UTC_FORMAT, time.gmtime())


def seconds_between(start: str, end: str) -> float:
    """Seconds from one ``UTC_FORMAT`` time to another."""
    return float(calendar.timegm(time.strptime(end, UTC_FORMAT)) - calendar.timegm(time.strptime(start, UTC_FORMAT)))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write into, renamed onto ``path`` when the block ends: a reader never
    sees half a file, and a writer killed before the rename leaves the previous file whole (and no leftover)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through ``atomic_path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


class DamagedRecord(ValueError):
    """A record that exists but cannot be read; the message names the file and why (one line)."""


def read_record(path: str | Path, required: tuple[str, ...] = ()) -> dict:
    """The JSON object in ``path``, holding the ``required`` keys; ``DamagedRecord`` if it is anything else."""
    path = Path(path)
    try:
        record = json.loads(path.read_bytes())
    except json.JSONDecodeError as err:
        raise DamagedRecord(f"{path} cannot be read: not valid JSON ({err})") from None
    except UnicodeDecodeError as err:
        raise DamagedRecord(f"{path} cannot be read: not text ({err.reason} at byte {err.start})") from None
    if not isinstance(record, dict):
        raise DamagedRecord(f"{path} cannot be read: a JSON {type(record).__name__}, not an object")
    missing = [key for key in required if key not in record]
    if missing:
        raise DamagedRecord(f"{path} cannot be read: it lacks {missing}")
    return record


def is_set_aside(path: str | Path) -> bool:
    return SET_ASIDE in Path(path).name


def set_aside(path: str | Path) -> Path:
    """Rename ``path`` (a file or folder) to ``<name>.damaged-<UTC time>`` beside it; returns the new path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target, n = path.with_name(f"{path.name}{SET_ASIDE}{stamp}"), 1
    while target.exists():  # twice in one second
        target, n = path.with_name(f"{path.name}{SET_ASIDE}{stamp}-{n}"), n + 1
    path.rename(target)
    return target


def finished_with(folder: str | Path, params: dict) -> bool:
    """Whether ``folder`` holds a finished run of ``params`` (its metrics.json records the same parameters, defaults
    filled in: ``parameters.differing_params``). The folder's records must be readable (``record_damage``)."""
    metrics = Path(folder) / "metrics.json"
    return metrics.exists() and not differing_params(read_record(metrics)["params"], params)


def added_tasks(folder: str | Path, params: dict) -> list[str] | None:
    """The evaluation tasks ``params`` add to the finished run in ``folder``, when that is all they change and the
    run kept its weights (``model/``, or no training at all): those tasks are then evaluated with the kept weights,
    without training again. None otherwise (nothing added, something else changed, or no weights kept)."""
    folder = Path(folder)
    if not (folder / "metrics.json").exists():
        return None
    old = read_record(folder / "metrics.json")["params"]
    before = old.get("eval_benchmarks", DEFAULTS["eval_benchmarks"])
    added = [task for task in params["eval_benchmarks"] if task not in before]
    if not added or not set(before) <= set(params["eval_benchmarks"]):
        return None
    read_before = {key for task in before for key in TASK_PARAMETERS[task]}
    free = {"eval_benchmarks"} | {key for task in added for key in TASK_PARAMETERS[task]} - read_before
    if set(differing_params(old, params)) - free:
        return None
    return added if params["steps"] == 0 or (folder / "model").is_dir() else None


def record_damage(folder: str | Path) -> str | None:
    """Why ``folder`` cannot count as a run (its params.json or metrics.json exists but cannot be read), or None.

    Such a folder is set aside by whoever runs it next, so the run starts over from scratch.
    """
    folder = Path(folder)
    for name in RUN_RECORDS:
        if (folder / name).exists():
            try:
                read_record(folder / name, METRICS_KEYS if name == "metrics.json" else ())
            except DamagedRecord as err:
                return str(err)
    return None


def where_am_i() -> dict:
    """Host, devices and Slurm job of this process (what a run records about where it ran)."""
    here = {"host": socket.gethostname(), "pid": os.getpid(), "devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        if key in os.environ:
            here[key.lower()] = os.environ[key]
    return here
