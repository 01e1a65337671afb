"""``python -m hybridlib.sweep PARAMS.yaml``: the sweep driver's command line (the code is ``hybridlib.runs.sweep``)."""

import sys

from .runs.sweep import export_points, load_sweep, main, run_sweep

__all__ = ["export_points", "load_sweep", "main", "run_sweep"]

if __name__ == "__main__":
    sys.exit(main())
