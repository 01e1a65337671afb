"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the trainable parameters (frozen ones are rebuilt from the starting model), the
optimizer, schedule, gradient scaler, sampler state and every random state. It is written to a
temporary folder and renamed into place, so a run killed while saving keeps the previous checkpoint.

It holds tensors and plain data only (random states as tensors and lists), and is read with
``torch.load(..., weights_only=True)`` and ``json``: anyone who can write a run folder must not be able to
make the next resume run code. A file in any other form (a pickle of objects, a checkpoint from before this
format) is refused with a ``CheckpointError`` naming it; nothing in it is executed.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

STATE_FILE = "state.pt"
INFO_FILE = "checkpoint.json"


def _trainable(modules: list[nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{i}.{name}": p.detach() for i, m in enumerate(modules)
            for name, p in m.named_parameters() if p.requires_grad}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def _random_states() -> dict:
    """Every random state as tensors and plain lists (numpy's array and python's tuples would need pickle)."""
    version, internal, gauss_next = random.getstate()
    legacy = np.random.get_state(legacy=False)
    states = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {"bit_generator": legacy["bit_generator"], "key": legacy["state"]["key"].tolist(),
                  "pos": legacy["state"]["pos"], "has_gauss": legacy["has_gauss"], "gauss": legacy["gauss"]},
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_random_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    python = states["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    numpy = states["numpy"]
    np.random.set_state({"bit_generator": numpy["bit_generator"], "has_gauss": numpy["has_gauss"],
                         "gauss": numpy["gauss"],
                         "state": {"key": np.array(numpy["key"], dtype=np.uint32), "pos": numpy["pos"]}})
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(folder: str | Path, step: int, modules: list[nn.Module], optimizer, scheduler, scaler,
                    sampler) -> Path:
    """Write the state after ``step`` completed steps into ``folder`` (atomically replaced)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({
        "step": step,
        "parameters": _trainable(modules),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "random": _random_states(),
    }, tmp / STATE_FILE)
    sampler_state = sampler.state_dict() if hasattr(sampler, "state_dict") else None
    (tmp / INFO_FILE).write_text(json.dumps({"step": step, "sampler": sampler_state}) + "\n")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _refuse(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} refused: {reason}. A checkpoint holds tensors and plain data only "
                           f"(one written before this format is refused too); delete {path.parent} to start the "
                           "run over")


def _read_info(folder: Path) -> dict:
    path = folder / INFO_FILE
    try:
        info = json.loads(path.read_bytes())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise _refuse(path, f"not valid JSON ({err})") from None
    if not isinstance(info, dict) or not isinstance(info.get("step"), int) or "sampler" not in info:
        raise _refuse(path, "not a checkpoint description ({'step': ..., 'sampler': ...})")
    return info


def _read_state(folder: Path) -> dict:
    path = folder / STATE_FILE
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a foreign pickle: refused below
            # weights_only: tensors and plain containers only; a pickled object is refused before it is built
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # whatever the file is, it is not a checkpoint we can use
        text = " ".join(str(err).split())
        unpickler = re.search(r"WeightsUnpickler error: (.*?)(?: was not an allowed| Check the documentation|$)", text)
        reason = (f"it holds more than tensors and plain data ({unpickler.group(1)})" if unpickler
                  else f"not a readable torch file ({type(err).__name__}: {text.split('. ')[0] or 'empty'})")
        raise _refuse(path, reason) from None
    if not isinstance(state, dict) or not {"step", "parameters", "optimizer", "scheduler", "scaler",
                                           "random"} <= set(state):
        raise _refuse(path, "not a training state (step, parameters, optimizer, scheduler, scaler, random)")
    return state


def checkpoint_step(folder: str | Path) -> int | None:
    """Completed steps of the checkpoint in ``folder``, or None if there is none."""
    folder = Path(folder)
    return _read_info(folder)["step"] if (folder / INFO_FILE).exists() else None


def load_checkpoint(folder: str | Path, modules: list[nn.Module], optimizer, scheduler, scaler, sampler) -> int:
    """Restore everything saved by ``save_checkpoint``; returns the number of completed steps."""
    folder = Path(folder)
    state = _read_state(folder)
    current = _trainable(modules)
    if set(current) != set(state["parameters"]):
        raise ValueError(f"checkpoint {folder} was saved for other trainable parameters; delete it to start over")
    with torch.no_grad():
        for name, value in state["parameters"].items():
            current[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    info = _read_info(folder)
    if info["sampler"] is not None:
        sampler.load_state_dict(info["sampler"])
    _restore_random_states(state["random"])
    return int(state["step"])
