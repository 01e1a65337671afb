"""The lock that keeps two processes from running one run folder at once, and where launchers keep their files.

A run takes its folder's lock when it records its parameters (``experiment.prepare_run_folder``) and holds it
until its process ends; a sweep asks who holds it before launching. The lock and the launchers' logs live in
``<output_dir>/.launch/<run>/``, outside the run folder, so setting a damaged folder aside never moves them.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

from ..cache import FileLock, LockBusy, lock_holder
from .config import ParameterError

LAUNCH_DIR = ".launch"


def launch_dir(folder: str | os.PathLike) -> Path:
    """``<output_dir>/.launch/<run>/``: the launcher's files of the run in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    return folder.parent / LAUNCH_DIR / folder.name


class RunFolderBusy(ParameterError):
    """Another process is running this run folder (it holds the folder's lock)."""


_HELD: dict[str, FileLock] = {}  # run-folder locks this process holds, by lock path


def run_lock_path(folder: str | os.PathLike) -> Path:
    return launch_dir(folder) / "lock"


def lock_run_folder(folder: str | os.PathLike) -> None:
    """Hold ``folder``'s lock for the rest of this process (``experiment.prepare_run_folder`` takes it).

    Two processes never run one run folder at once: the second gets :class:`RunFolderBusy` naming the first
    (host, pid, since when). Taking it again in the same process (a notebook cell rerun) is a no-op. The lock
    lives outside the run folder, so setting a damaged folder aside never moves it.
    """
    path = run_lock_path(folder)
    if str(path) in _HELD:
        return
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except LockBusy:
        raise RunFolderBusy(f"{folder} is being run by another process ({lock.holder()}); wait for it to "
                            f"finish, or stop that process") from None
    _HELD[str(path)] = lock
    atexit.register(lock.release)  # a process that ends normally leaves no lock file (one killed: the kernel frees it)


def run_folder_holder(folder: str | os.PathLike) -> str | None:
    """Who is running ``folder`` right now ("host H pid N since T"), or None."""
    if str(run_lock_path(folder)) in _HELD:
        return None  # this very process
    return lock_holder(run_lock_path(folder))
