"""Where the project is: the folder holding notebooks/ and params/."""

from __future__ import annotations

from pathlib import Path


def find_project_root(start: str | Path | None = None) -> Path:
    """The nearest folder above ``start`` (default: the working directory) holding notebooks/ and params/."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "params").is_dir():
            return folder
    raise FileNotFoundError(f"no project root (a folder with notebooks/ and params/) above {here}")
