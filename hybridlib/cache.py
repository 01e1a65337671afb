"""The one cache folder for what the project keeps outside git, and how things are written into it.

Downloaded benchmarks (``data/``), the converted embedded model and streamed pair tables (``pairs/``) all live
under :func:`cache_dir`: ``$HYBRIDLIB_CACHE_DIR``, else ``$XDG_CACHE_HOME/hybridlib``, else ``~/.cache/hybridlib``.
Entries appear only by rename (:func:`build_folder`), so a reader never sees a half-written one, and whoever
fills an entry holds its :func:`file_lock` first, so concurrent first users (the runs of a parallel sweep) fill
it once: the others wait for the lock, then find the entry complete.

``file_lock`` / ``FileLock`` are advisory, exclusive ``fcntl.flock`` locks on a file next to what they guard
(removed on release). The kernel drops them when their holder exits, however it exits (SIGKILL included), so
a lock is never stale.
Across machines they need a filesystem that carries ``flock`` between its clients: NFSv4 (or v3 with ``lockd``),
Lustre mounted with ``-o flock`` (``localflock`` only locks within one node), BeeGFS with global file locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .records import utc_now

CACHE_ENV = "HYBRIDLIB_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
    """The cache root (see the module docstring), or a path inside it when ``parts`` are given."""
    if os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "hybridlib"
    return root.joinpath(*parts)


@contextlib.contextmanager
def build_folder(target: Path, marker: str | None = None, stale_after_s: float = 3600) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to fill; on success it replaces ``target`` in one rename.

    ``marker`` names a file that only a complete folder holds: if another process completed ``target``
    meanwhile, that folder is kept and ours dropped (None: ours always replaces it). On an exception the temporary folder is removed and
    ``target`` is left as it was. Temporary folders of builds killed more than ``stale_after_s`` ago are
    cleaned up first (a live build is never that old).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}-tmp-"
    now = time.time()
    for leftover in target.parent.glob(prefix + "*"):
        with contextlib.suppress(OSError):
            if leftover.is_dir() and now - leftover.stat().st_mtime > stale_after_s:
                shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        yield tmp
        if marker is not None and (target / marker).is_file():
            shutil.rmtree(tmp)
            return
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class LockBusy(RuntimeError):
    """A lock asked for without waiting (or past its timeout) is held by another process; the message says who."""


class FileLock:
    """An exclusive advisory lock (``fcntl.flock``) on the file ``path``, from ``acquire`` to ``release`` or the
    end of the holding process.

    The file exists while the lock is held: the holder writes ``host``, ``pid`` and the time into it, so a
    process that finds it taken can say by whom (:meth:`holder`), and removes it on release, so locks leave
    nothing behind. (A waiter that then gets the lock of the removed file sees that the path is gone or is
    another file, and tries again on the path's current file: two holders are never possible.) A holder that
    dies leaves the file, unlocked; the next one takes it over.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._handle = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self, timeout: float | None = None, poll_s: float = 0.2, waiting_note: float = 5.0,
                record: bool = True) -> "FileLock":
        """Take the lock, waiting up to ``timeout`` seconds (None: as long as it takes; 0: not at all).

        Raises :class:`LockBusy` naming the holder when it is still taken after ``timeout``. A wait longer than
        ``waiting_note`` seconds is announced once on stderr (who holds it), so a waiting run does not look hung.
        ``record``: write who holds it into the file (False for a mere probe).
        """
        if self._handle is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        start, announced = time.monotonic(), False
        while True:
            handle = open(self.path, "a+")
            try:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    waited = time.monotonic() - start
                    if timeout is not None and waited >= timeout:
                        raise LockBusy(f"{self.path} is held by {self.holder()}") from None
                    if not announced and waited >= waiting_note:
                        print(f"waiting for {self.path} (held by {self.holder()})", file=sys.stderr, flush=True)
                        announced = True
                    time.sleep(poll_s)
                    continue
                if not self._is_current(handle):  # released and removed while we waited: take the new one
                    handle.close()
                    continue
                if record:
                    handle.seek(0)
                    handle.truncate()
                    handle.write(f"host {socket.gethostname()} pid {os.getpid()} since "
                                 f"{utc_now()}\n")
                    handle.flush()
            except BaseException:
                handle.close()
                raise
            self._handle = handle
            return self

    def _is_current(self, handle) -> bool:
        try:
            here, there = os.fstat(handle.fileno()), os.stat(self.path)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def release(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # while still held: whoever waits on this file will see it is gone
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it: "host H pid N since T"."""
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(path: str | os.PathLike) -> str | None:
    """Who holds the lock at ``path`` right now (see ``FileLock.holder``), or None when it is free."""
    lock = FileLock(path)
    if not lock.path.exists():
        return None
    try:
        lock.acquire(timeout=0, record=False)
    except LockBusy:
        return lock.holder()
    lock.release()
    return None


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float | None = None) -> Iterator[FileLock]:
    """Hold the exclusive lock ``path`` for the ``with`` block (waiting up to ``timeout`` s; see ``FileLock``)."""
    lock = FileLock(path).acquire(timeout=timeout)
    try:
        yield lock
    finally:
        lock.release()
