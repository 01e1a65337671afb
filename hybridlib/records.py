"""Run records on disk (``params.json``, ``metrics.json``, ``sweep.json``): read strictly, set aside when damaged.

A record truncated by a full disk, a sync tool or a crash outside the project must neither stop a sweep nor
pass for a finished run. A damaged one is renamed to ``<name>.damaged-<UTC time>`` next to where it was:
kept for inspection, never deleted, and ignored by everything that reads a sweep back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

SET_ASIDE = ".damaged-"  # in the name of everything set aside; readers of a sweep skip such folders
RUN_RECORDS = ("params.json", "metrics.json")
METRICS_KEYS = ("run_name", "params", "benchmarks")  # what every reader of a metrics.json relies on


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
