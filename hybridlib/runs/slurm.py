"""Slurm launcher: one Slurm job per run, all in one job array capped at ``max_parallel``, through
``submitit`` (the optional extra ``pip install -e ".[slurm]"``).

Each job runs :func:`hybridlib.runs.execute.execute` of its run in the submission's project root. Slurm's own
logs and pickles are in ``<output_dir>/.launch/slurm/``; ``.launch/<run>/slurm.json`` holds the job of the last
submission, so the same sweep command later collects what finished and resubmits what died.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from ..records import seconds_between, utc_now, write_atomic
from .config import ParameterError
from .execute import LAUNCHER_ENV, TERMINAL, Placement, Task, execute
from .runlock import launch_dir

SLURM_EXTRA = 'pip install -e ".[slurm]"'


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise ParameterError(f"--launcher slurm needs submitit, which is not installed: {SLURM_EXTRA}") from None
    return submitit


try:  # the job's callable must be a Checkpointable to be requeued (timeout, preemption); submitit is optional
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - the Slurm launcher then refuses to start, naming the extra
    _Checkpointable = object


class SlurmRun(_Checkpointable):
    """What one Slurm job runs: :func:`execute` of its run, in the submission's project root.

    A job that reaches its time limit or is preempted gets submitit's signal, is requeued (``checkpoint``
    resubmits this same callable) and, when it starts again, the run resumes from its own checkpoint.
    """

    def __init__(self, task: Task, nproc: int = 1):
        self.task, self.nproc = task, nproc

    def __call__(self) -> dict:
        os.chdir(self.task.root)
        os.environ[LAUNCHER_ENV] = "slurm"
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus and "OMP_NUM_THREADS" not in os.environ:
            os.environ["OMP_NUM_THREADS"] = str(max(1, int(cpus) // self.nproc))
        # a requeued or resubmitted job may start while the killed one's processes still hold the folder
        return execute(self.task.params_file, nproc=self.nproc, lock_wait_s=120, root=self.task.root)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)  # the run's own checkpoint/ holds the training state


class SlurmLauncher:
    """Every run as one task of a Slurm job array (at most ``max_parallel`` running), through submitit.

    ``slurm.json`` in each run's ``.launch`` folder keeps its job, so a later invocation (after ``--no-wait``,
    or after the driver was stopped) collects what finished and knows what is still queued or running. Job
    states come from ``squeue`` and submitit's result files (no accounting database needed).
    """

    name = "slurm"
    concurrent = True

    def __init__(self, folder: str | os.PathLike, partition: str | None = None, gpus_per_run: int = 1,
                 time_min: int = 60, cpus_per_run: int | None = None, max_parallel: int = 8,
                 slurm_args: dict | None = None, job_name: str = "hybridlib"):
        self.submitit = _import_submitit()
        if gpus_per_run < 0 or time_min < 1 or max_parallel < 1 or (cpus_per_run is not None and cpus_per_run < 1):
            raise ParameterError("--gpus-per-run must be >= 0, --time-min, --max-parallel and --cpus-per-run >= 1")
        self.folder = Path(folder)
        self.nproc = max(1, gpus_per_run)
        self.poll_s = float(os.environ.get("HYBRIDLIB_SLURM_POLL_S", "5"))
        self.parameters = {"job_name": job_name, "time": time_min, "nodes": 1, "ntasks_per_node": 1,
                           "array_parallelism": max_parallel, "additional_parameters": dict(slurm_args or {})}
        if partition:
            self.parameters["partition"] = partition
        if gpus_per_run:
            self.parameters["gpus_per_node"] = gpus_per_run
        if cpus_per_run:
            self.parameters["cpus_per_task"] = cpus_per_run
        self.settings = {"partition": partition, "gpus_per_run": gpus_per_run, "time_min": time_min,
                         "cpus_per_run": cpus_per_run, "max_parallel": max_parallel, "slurm_args": slurm_args}
        self._absent: dict[str, int] = {}

    def describe(self) -> str:
        s = self.settings
        return (f"slurm: job array, partition {s['partition'] or '(default)'}, {s['gpus_per_run']} GPU(s) and "
                f"{s['cpus_per_run'] or 'default'} CPUs per run, {s['time_min']} min limit, at most "
                f"{s['max_parallel']} at once")

    def _record_path(self, task: Task) -> Path:
        return launch_dir(task.folder) / "slurm.json"

    def launch(self, tasks: list[Task]) -> dict[str, Placement]:
        if not tasks:
            return {}
        executor = self.submitit.SlurmExecutor(folder=self.folder, max_num_timeout=3)
        executor.update_parameters(**self.parameters)
        try:
            jobs = executor.submit_array([SlurmRun(task, self.nproc) for task in tasks])
        except Exception as err:  # sbatch refused it (unknown partition or account, too many GPUs, ...)
            lines = str(err).strip().splitlines()
            raise ParameterError(f"Slurm refused the job array: {lines[-1] if lines else type(err).__name__} "
                                 f"(sbatch options: {self.describe()})") from None
        placed = {}
        for task, job in zip(tasks, jobs):
            placement = placed[task.run] = Placement(task, self.name, slurm_job=job.job_id, submitted=utc_now(),
                                                     **self._logs(job.job_id))
            self._write_record(placement, collected=False)
        return placed

    def _logs(self, job_id: str) -> dict:
        paths = self.submitit.core.utils.JobPaths(self.folder, job_id=job_id, task_id=0)
        return {"log": str(paths.stdout), "stderr": str(paths.stderr)}

    def _write_record(self, placement: Placement, collected: bool) -> None:
        write_atomic(self._record_path(placement.task), json.dumps({"job_id": placement.slurm_job, "folder": str(self.folder),
                                   "attempt": placement.attempt, "submitted": placement.submitted,
                                   "collected": collected, "status": placement.status}, indent=1) + "\n")

    def collected(self, placement: Placement) -> None:
        """The driver has recorded how this job ended: a later invocation does not collect it again."""
        self._write_record(placement, collected=True)

    def earlier(self, tasks: dict[str, Task]) -> dict[str, Placement]:
        """Jobs of earlier invocations not yet collected (queued, running, or ended since)."""
        found = {}
        for run, task in tasks.items():
            path = self._record_path(task)
            if not path.exists():
                continue
            try:
                record = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if record.get("collected") or not record.get("job_id"):
                continue
            task = dataclasses.replace(task, attempt=int(record.get("attempt", 1)))
            self.folder = Path(record.get("folder") or self.folder)
            found[run] = Placement(task, self.name, slurm_job=record["job_id"], submitted=record.get("submitted"),
                                   **self._logs(record["job_id"]), note="submitted by an earlier invocation")
        return found

    def _queue(self) -> dict[str, tuple[str, str]]:
        """``{job id: (state, node)}`` of this user's queued and running jobs (array tasks one by one)."""
        import getpass

        done = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%N"],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"squeue failed: {done.stderr.strip()}")
        queue_ = {}
        for line in done.stdout.splitlines():
            job, state, node = (line.split("|") + ["", ""])[:3]
            queue_[job.strip()] = (state.strip(), node.strip())
        return queue_

    def _final_state(self, job_id: str) -> str:
        """How Slurm says a job ended (CANCELLED, TIMEOUT, NODE_FAIL, ...), while it still remembers it."""
        done = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=60)
        for field in done.stdout.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return "gone from the queue"

    def refresh(self, placements) -> None:
        """Update the placements of active jobs: queued / running from squeue, the end from the result file."""
        active = [p for p in placements if p.status not in TERMINAL]
        if not active:
            return
        try:
            queued = self._queue()
        except (OSError, RuntimeError, subprocess.SubprocessError) as err:
            print(f"warning: {err}; trying again", file=sys.stderr, flush=True)
            return
        for placement in active:
            state, node = queued.get(placement.slurm_job, (None, None))
            if state in ("RUNNING", "COMPLETING"):
                if placement.status != "running":
                    placement.mark_running(where=f"Slurm job {placement.slurm_job} on {node}", host=node)
                continue
            if state is not None:  # PENDING, REQUEUED, CONFIGURING, SUSPENDED, ...
                if placement.status == "running":  # requeued (time limit, preemption): it resumes when it restarts
                    placement.status, placement.note = "queued", f"requeued ({state})"
                continue
            self._ended(placement)

    def _ended(self, placement: Placement) -> None:
        from submitit.core.utils import JobPaths, pickle_load

        job = placement.slurm_job
        result = JobPaths(self.folder, job_id=job, task_id=0).result_pickle
        if not result.exists():
            # a job that just finished may show its result file a moment later on a shared filesystem
            self._absent[job] = self._absent.get(job, 0) + 1
            if self._absent[job] < 3:
                return
            state = self._final_state(job)
            placement.finish(None, state, f"Slurm job {job} ended without a result ({state}); see {placement.log}")
            return
        try:
            kind, value = pickle_load(result)
        except Exception as err:  # noqa: BLE001 - a half-written or unreadable result: the job did not report
            kind, value = "error", f"unreadable result {result}: {err}"
        if kind == "success" and isinstance(value, dict):
            placement.started = value.get("started") or placement.started
            placement.finish(value, self._final_state(job), "")
            placement.where = (f"Slurm job {job} on {value.get('host')}"
                               + (f" (CUDA_VISIBLE_DEVICES={value['devices']})" if value.get("devices") else ""))
            placement.ended = value.get("ended") or placement.ended
            if placement.started and placement.ended:
                placement.seconds = seconds_between(placement.started, placement.ended)
        else:  # the job's Python failed outside the run (environment missing on the node, say)
            last = str(value).strip().splitlines()[-1:] or [""]
            placement.finish(None, self._final_state(job),
                             f"Slurm job {job} failed outside the run: {last[0]}; see {placement.stderr}")

    def stop(self) -> None:
        pass  # Slurm jobs keep running without the driver; the same command collects them later


