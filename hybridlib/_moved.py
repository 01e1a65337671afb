"""The flat module names of hybridlib 0.1 (``hybridlib.model``, ``hybridlib.train``, ...) still import, as the
modules they became, so code and notebooks written against 0.1 and pickled Slurm jobs keep working."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "pair_sources": "data.pair_sources", "sampler": "data.sampler", "tokens": "data.tokens",
    "model": "models.bi_encoder", "embedded": "models.embedded",
    "train": "training.loop", "loss": "training.loss", "cached_loss": "training.cached_loss",
    "checkpoint": "training.checkpoint", "distributed": "training.distributed",
    "metrics": "evaluation.metrics", "search": "evaluation.search", "bias": "evaluation.bias",
    "stats": "evaluation.stats", "plots": "analysis.plots", "explore": "analysis.explore",
    "config": "runs.config", "runlock": "runs.runlock",
}  # hybridlib.data and hybridlib.analysis are packages now, exporting what the 0.1 modules did


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers ``import hybridlib.<old>`` with the module ``hybridlib.<new>`` itself (one module object, so
    classes and monkeypatches are shared)."""

    def find_spec(self, name, path=None, target=None):
        package, _, leaf = name.rpartition(".")
        if package == "hybridlib" and leaf in MOVED:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"hybridlib.{MOVED[spec.name.rpartition('.')[2]]}")

    def exec_module(self, module):
        pass  # already executed under its new name


def install() -> None:
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())  # last: real modules are always found first


def lazy_exports(module_name: str, exports: dict[str, tuple[str, ...]], fallback: tuple[str, ...] = ()):
    """``__getattr__`` and ``__dir__`` for a stage package: its public names, imported from their submodule on
    first use (so importing one light submodule, e.g. ``runs.config`` for ``--help``, never imports torch).
    ``fallback``: submodules searched for any other public name (what a 0.1 flat module of that name exported)."""
    where = {name: sub for sub, names in exports.items() for name in names}

    def submodule(sub: str):  # "results" (of this package) or an absolute "hybridlib.paths"
        return importlib.import_module(sub if sub.startswith("hybridlib.") else f"{module_name}.{sub}")

    def __getattr__(name: str):
        if name in where:
            return getattr(submodule(where[name]), name)
        if not name.startswith("_"):
            for sub in fallback:
                module = submodule(sub)
                if hasattr(module, name):
                    return getattr(module, name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    def __dir__():
        return sorted(where)

    return __getattr__, __dir__
