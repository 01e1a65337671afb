"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the trainable parameters (frozen ones are rebuilt from the starting model), the
optimizer, schedule, gradient scaler, sampler state and every random state. It is written to a
temporary folder and renamed into place, so a run killed while saving keeps the previous checkpoint.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

STATE_FILE = "state.pt"
INFO_FILE = "checkpoint.json"


def _trainable(modules: list[nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{i}.{name}": p.detach() for i, m in enumerate(modules)
            for name, p in m.named_parameters() if p.requires_grad}


def _random_states() -> dict:
    states = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_random_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
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


def checkpoint_step(folder: str | Path) -> int | None:
    """Completed steps of the checkpoint in ``folder``, or None if there is none."""
    info = Path(folder) / INFO_FILE
    return json.loads(info.read_text())["step"] if info.exists() else None


def load_checkpoint(folder: str | Path, modules: list[nn.Module], optimizer, scheduler, scaler, sampler) -> int:
    """Restore everything saved by ``save_checkpoint``; returns the number of completed steps."""
    folder = Path(folder)
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
    current = _trainable(modules)
    if set(current) != set(state["parameters"]):
        raise ValueError(f"checkpoint {folder} was saved for other trainable parameters; delete it to start over")
    with torch.no_grad():
        for name, value in state["parameters"].items():
            current[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    info = json.loads((folder / INFO_FILE).read_text())
    if info["sampler"] is not None:
        sampler.load_state_dict(info["sampler"])
    _restore_random_states(state["random"])
    return int(state["step"])
