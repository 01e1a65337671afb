"""hybridlib: hybrid (mono / cross / multi) batch training for cross-lingual retrieval.

One folder per stage, in the order the data flows (docs/architecture.md): ``data`` -> ``models`` -> ``training``
-> ``evaluation`` -> ``analysis``, with ``runs`` on top (parameters, one run, sweeps, launchers). Each stage's
``__init__`` names its public surface; the top-level modules are helpers every stage may use (``cache``,
``records``, ``progress``, ``paths``, ``parameters``, ``yamlfile``) and the command-line entry points
(``python -m hybridlib.sweep``, ``python -m hybridlib.experiment``).
"""

from ._moved import install as _install_moved_names

__version__ = "0.2.0"

_install_moved_names()
