"""Models stage: the bi-encoder (padded or packed encoding, saving in the sentence-transformers layout), the
embedded default model, and the run's model from its parameters."""

from .._moved import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "bi_encoder": ("BiEncoder", "load_model", "tiny_model"),
    "build": ("build_model", "pick_device"),
})
