"""Training stage: the one training loop, the InfoNCE loss (GradCache and cross-rank gathering inside the loss),
checkpoints, and the torch.distributed helpers."""

from .._moved import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "loop": ("train", "validation_loss"),
    "loss": ("InfoNCELoss", "LossOutput"),
})
