"""``python -m hybridlib.experiment PARAMS.yaml`` (also under torchrun): one run from a flat parameter file (the code
is ``hybridlib.runs.experiment``)."""

import sys

from .runs.experiment import Run, main, run_experiment

__all__ = ["Run", "main", "run_experiment"]

if __name__ == "__main__":
    sys.exit(main())
