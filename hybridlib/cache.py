"""The one cache folder for what the project keeps outside git, and how things are written into it.

Downloaded benchmarks (``data/``), the converted embedded model and streamed pair tables (``pairs/``) all live
under :func:`cache_dir`: ``$HYBRIDLIB_CACHE_DIR``, else ``$XDG_CACHE_HOME/hybridlib``, else ``~/.cache/hybridlib``.
Entries appear only by rename (:func:`build_folder`), so a reader never sees a half-written one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

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
