"""Runs stage: the run parameters (validated), one run (``Run``: the notebook, ``python -m hybridlib.experiment``
and torchrun all make its calls), the sweep driver, and the launchers (local slots, Slurm) with the run lock."""

from .._moved import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "config": ("resolve_params", "load_yaml", "ParameterError"),
    "experiment": ("Run", "run_experiment"),
    "sweep": ("run_sweep", "load_sweep"),
})
