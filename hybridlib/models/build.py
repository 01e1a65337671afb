"""The run's model from its parameters: the embedded default, a Hugging Face name, a local folder, or the
tiny random encoder of the CI smoke runs."""

from __future__ import annotations

import torch

from .bi_encoder import BiEncoder, load_model, tiny_model

TINY_MODEL = "tiny-random"  # a tiny random encoder with the real tokenizer: CI smoke runs only


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(params: dict, device: torch.device | None = None) -> BiEncoder:
    """The run's model on ``device`` (default: the ``device`` parameter)."""
    settings = {key: params[key] for key in ("pooling", "query_prefix", "passage_prefix",
                                             "query_max_length", "passage_max_length")}
    if params["model"] == TINY_MODEL:
        model = tiny_model(seed=params["seed"], **settings)
    else:
        model = load_model(params["model"], **settings)
    if params["freeze_embeddings"]:
        # the 250k-row table dominates optimizer time on CPU; its rows for untrained languages never move
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    return model.to(device if device is not None else pick_device(params["device"]))
