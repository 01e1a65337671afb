"""Progress bars: widgets in JupyterLab, plain text where nobody watches live (papermill, logs, terminals).

``tqdm.auto`` draws a widget whenever it runs in a kernel; in a notebook executed headless (papermill under a
sweep) the saved widget shows its first state ("0%") to anyone who opens the notebook later, and tqdm's text
bars go to stderr, which notebooks show as warnings. With ``HYBRIDLIB_PROGRESS=text`` (the sweep sets it for
the notebooks it executes: ``text_bars``) bars are text on stdout, updated at most every ``TEXT_INTERVAL_S`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from tqdm.auto import tqdm as _auto
from tqdm.std import tqdm as _text

PROGRESS_ENV = "HYBRIDLIB_PROGRESS"
TEXT_INTERVAL_S = 15.0


def progress_bar(*args, **kwargs):
    """A tqdm bar (same arguments): a widget, or text on stdout when ``$HYBRIDLIB_PROGRESS`` is ``text``."""
    if os.environ.get(PROGRESS_ENV) == "text":
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", TEXT_INTERVAL_S)
        kwargs.setdefault("ascii", True)
        return _text(*args, **kwargs)
    return _auto(*args, **kwargs)


@contextlib.contextmanager
def text_bars() -> Iterator[None]:
    """Text bars in the kernels started inside the block (they inherit the environment); restored afterwards."""
    before = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "text"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = before
