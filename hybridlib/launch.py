"""The 0.1 name of the launchers: Slurm jobs queued before 0.2 unpickle ``hybridlib.launch.SlurmRun`` (now in
``hybridlib.runs.slurm``, with the local launcher in ``runs.local`` and one run's execution in ``runs.execute``)."""

from .runs.execute import Placement, Task, execute
from .runs.local import LocalLauncher
from .runs.slurm import SlurmLauncher, SlurmRun

__all__ = ["Placement", "Task", "execute", "LocalLauncher", "SlurmLauncher", "SlurmRun"]
