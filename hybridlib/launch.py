"""Where a sweep's runs execute. A launcher places one run, its flat parameter file, and reports back.

The sweep driver (``hybridlib.sweep``) does everything else: it validates every point, skips finished runs,
sets damaged ones aside, fills the shared caches, retries runs whose process died, records ``sweep.json``,
prints the summary and runs the analysis notebooks. A launcher only starts a run somewhere and tells the driver
where, when, with which exit status, and where its log is:

- ``LocalLauncher(workers=1, name="sequential")`` (the default): one run at a time on this machine, as before;
- ``LocalLauncher(workers=K)``: K runs at once over CPU slots, the CPU threads split between them
  (``OMP_NUM_THREADS``); ``LocalLauncher(gpus=["0", "1", ...], gpus_per_run=N)``: one run per group of N GPUs,
  each with its own ``CUDA_VISIBLE_DEVICES`` (a pool of subprocesses over slots, ``concurrent.futures``);
- ``SlurmLauncher``: one Slurm job per run, all in one job array capped at ``max_parallel``, through
  ``submitit`` (the optional extra ``pip install -e ".[slurm]"``).

One way to run a run, everywhere: :func:`execute`, in whatever process the launcher started (a local
subprocess ``python -m hybridlib.launch run PARAMS.yaml``, or the Slurm job). A run on one device executes
``notebooks/02_train.ipynb`` through papermill into the run folder, as the sequential sweep always did, so
every run folder keeps its executed notebook. A run on N > 1 GPUs is torchrun's business:
``torchrun --standalone --nproc_per_node=N`` (a free rendezvous port per run, so concurrent runs never
collide) of the same ``experiment.Run`` calls (``python -m hybridlib.experiment`` makes them; the training
notebook cannot host N processes); its output is in its log.

A run that fails on its own (bad parameters, a non-finite loss: the notebook raised) reports ``failed`` and is
not retried. A run whose process died (killed, out of memory, a kernel that did not start, a lost node, a
cancelled job) reports ``died``: the driver may launch it again, and it resumes from its checkpoint.

Per run, the launcher keeps its files beside the run folder, in ``<output_dir>/.launch/<run>/``:
``params.yaml`` (the flat parameter file it placed), ``lock`` (the run-folder lock), ``attempt-<n>.log`` and
``attempt-<n>.json`` (a local attempt's output and result), ``slurm.json`` (the job of the last submission);
Slurm's own logs and pickles are in ``<output_dir>/.launch/slurm/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .config import DEFAULTS, ParameterError, load_yaml
from .progress import text_bars
from .runlock import RunFolderBusy, launch_dir, run_folder_holder

LAUNCHER_ENV = "HYBRIDLIB_LAUNCHER"  # tells a run which launcher started it (metrics.json environment)
TRAIN_NOTEBOOK = "02_train.ipynb"
SLURM_EXTRA = 'pip install -e ".[slurm]"'
TERMINAL = ("ok", "failed", "died", "busy")  # a placement in one of these states is over
_EXIT = {"ok": 0, "failed": 1, "busy": 75, "died": 70}  # exit status of `python -m hybridlib.launch run`


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- running one run, here ---------------------------------------------------------------------------------


def where_am_i() -> dict:
    """Host, devices and Slurm job of this process (what a run records about where it ran)."""
    here = {"host": socket.gethostname(), "pid": os.getpid(), "devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        if key in os.environ:
            here[key.lower()] = os.environ[key]
    return here


def failure_line(err: BaseException, notebook: Path | None) -> str:
    """One line: the notebook's own error (not papermill's wrapper) and where to read the rest."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        line = f"{err.ename}: {err.evalue}"
    else:
        lines = str(err).strip().splitlines()
        line = f"{type(err).__name__}: {lines[-1] if lines else ''}"
    return " ".join(line.split()) + (f" -> {notebook}" if notebook else "")


def notebook_parameters(params: dict) -> dict:
    """What papermill injects for a flat parameter file: where the run goes, and every value off its default."""
    return {k: v for k, v in params.items() if k in ("run_name", "point", "output_dir") or DEFAULTS.get(k) != v}


def execute(params_file: str | os.PathLike, nproc: int = 1, lock_wait_s: float = 0.0,
            root: str | os.PathLike | None = None) -> dict:
    """Run the run of a flat parameter file here, in this process's environment; returns what happened.

    ``{"status": "ok" | "failed" | "died" | "busy", "error", "notebook", "host", "pid", "devices", "slurm_*",
    "started", "ended"}``. One device: papermill of the training notebook into the run folder; ``nproc`` > 1:
    torchrun of the same calls. ``lock_wait_s``: how long to wait for the run folder's lock (a relaunch after a
    process died may find the dying process still holding it); still taken then: "busy". A run already
    finished with these parameters (placed twice, finished elsewhere meanwhile) is not redone.
    """
    from .analysis import find_project_root
    from .config import differing_params
    from .records import read_record, record_damage

    root = Path(root) if root is not None else find_project_root()
    record = {**where_am_i(), "started": now(), "notebook": None, "error": None}
    params = load_yaml(params_file)
    folder = root / params["output_dir"] / params["run_name"]
    holder = run_folder_holder(folder)
    deadline = time.monotonic() + lock_wait_s
    while holder and time.monotonic() < deadline:
        time.sleep(1)
        holder = run_folder_holder(folder)
    if holder:
        return {**record, "status": "busy", "error": f"running elsewhere ({holder})", "ended": now()}
    metrics = folder / "metrics.json"
    if not record_damage(folder) and metrics.exists() and not differing_params(read_record(metrics)["params"], params):
        return {**record, "status": "ok", "note": "already finished with these parameters", "ended": now()}
    if nproc > 1:
        status, error = _execute_torchrun(Path(params_file), nproc, folder, root)
    else:
        record["notebook"] = str(folder / TRAIN_NOTEBOOK)
        status, error = _execute_notebook(params, folder, root)
    print(f"hybridlib.launch: {params['run_name']}: {status}" + (f": {error}" if error else ""), flush=True)
    return {**record, "status": status, "error": error, "ended": now()}


def _execute_notebook(params: dict, folder: Path, root: Path) -> tuple[str, str | None]:
    """papermill of 02_train.ipynb into the run folder, its output streamed to this process's stdout/stderr."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    folder.mkdir(parents=True, exist_ok=True)
    notebook = folder / TRAIN_NOTEBOOK
    try:
        with text_bars():  # the run's notebook and log are read later: text bars, not widgets frozen at 0%
            papermill.execute_notebook(str(root / "notebooks" / TRAIN_NOTEBOOK), str(notebook),
                                       parameters=notebook_parameters(params), cwd=str(root), kernel_name="python3",
                                       progress_bar=False, stdout_file=sys.stdout, stderr_file=sys.stderr)
    except PapermillExecutionError as err:  # the notebook raised: the run's own failure
        print(err, file=sys.stderr, flush=True)  # its traceback, into the run's log
        if err.ename == RunFolderBusy.__name__:  # another process took the folder first
            return "busy", f"running elsewhere ({err.evalue})"
        return "failed", failure_line(err, notebook)
    except Exception as err:  # the kernel died or never started: the process, not the run
        print(f"{type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return "died", failure_line(err, notebook)
    return "ok", None


def _execute_torchrun(params_file: Path, nproc: int, folder: Path, root: Path) -> tuple[str, str | None]:
    """``torchrun --standalone --nproc_per_node=nproc`` of the run; each rank reports how it ended in a file."""
    ranks = launch_dir(folder) / "ranks"
    ranks.mkdir(parents=True, exist_ok=True)
    for old in ranks.glob("*.json"):
        old.unlink()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "hybridlib.launch", "rank", str(params_file), "--result-dir", str(ranks)]
    print(" ".join(command), flush=True)
    code = subprocess.run(command, cwd=root).returncode
    results = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in ranks.glob("rank-*.json")}
    statuses = {r["status"] for r in results.values()}
    if code == 0 and results.get(0, {}).get("status") == "ok":
        return "ok", None
    if "busy" in statuses:
        return "busy", next(r["error"] for r in results.values() if r["status"] == "busy")
    if len(results) == nproc and "failed" in statuses:  # every rank ended on its own and one raised: the run's fault
        first = results.get(0) if results.get(0, {}).get("status") == "failed" else \
            next(r for r in results.values() if r["status"] == "failed")
        return "failed", first["error"]
    missing = sorted(set(range(nproc)) - set(results))
    return "died", (f"torchrun exited with {code}; rank(s) {missing} ended without a result (killed)" if missing
                    else f"torchrun exited with {code}; ranks were terminated")


def _rank_main(params_file: str, result_dir: str) -> int:
    """One torchrun rank: the calls of ``python -m hybridlib.experiment``, and a file saying how it ended."""
    from .config import resolve_params
    from .distributed import init_from_env, shutdown
    from .experiment import run_experiment

    rank = int(os.environ.get("RANK", "0"))
    target = Path(result_dir) / f"rank-{rank}.json"

    def report(status: str, error: str | None = None) -> None:
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps({"status": status, "error": error, **where_am_i()}) + "\n")
        tmp.replace(target)

    def terminated(signum, frame):  # torchrun stopping the other ranks after one failed, or a preemption
        report("terminated", f"signal {signal.Signals(signum).name}")
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    try:
        params = resolve_params(load_yaml(params_file))
        device = init_from_env(params["device"])
        run_experiment(params, device=device)
    except RunFolderBusy as err:
        report("busy", f"running elsewhere ({err})")
        raise
    except Exception as err:
        report("failed", failure_line(err, None))
        raise
    finally:
        shutdown()
    report("ok")
    return 0


# --- what a launcher reports -------------------------------------------------------------------------------


@dataclasses.dataclass
class Task:
    """One run to place: its flat parameter file and folder (absolute), the project root, which attempt."""

    run: str
    params_file: str
    folder: str
    root: str
    attempt: int = 1

    def again(self) -> "Task":
        return dataclasses.replace(self, attempt=self.attempt + 1)


@dataclasses.dataclass
class Placement:
    """One attempt of one run, as its launcher sees it: queued -> running -> ok / failed / died / busy."""

    task: Task
    launcher: str
    status: str = "queued"
    where: str | None = None
    host: str | None = None
    devices: str | None = None
    slurm_job: str | None = None
    submitted: str | None = None
    started: str | None = None
    ended: str | None = None
    seconds: float | None = None
    exit: int | str | None = None
    log: str | None = None
    stderr: str | None = None  # Slurm keeps a job's stderr apart from its log (stdout)
    notebook: str | None = None
    error: str | None = None
    note: str | None = None
    _tick: float | None = dataclasses.field(default=None, repr=False)

    @property
    def run(self) -> str:
        return self.task.run

    @property
    def attempt(self) -> int:
        return self.task.attempt

    def mark_running(self, **fields) -> None:
        for key, value in fields.items():
            setattr(self, key, value)
        self.started = self.started or now()
        self._tick = self._tick or time.monotonic()
        self.status = "running"

    def finish(self, outcome: dict | None, exit_code, no_result: str) -> None:
        """Take the run's own report (``execute``'s dict) or, without one, record that its process died."""
        if outcome:
            for key in ("error", "notebook", "note", "host", "devices"):
                if outcome.get(key) is not None:
                    setattr(self, key, outcome[key])
            status = outcome["status"]
        else:
            status, self.error = "died", no_result
        self.exit = exit_code
        self.ended = now()
        if self._tick is not None:
            self.seconds = round(time.monotonic() - self._tick, 1)
        self.status = status  # last: the driver acts on it

    def record(self) -> dict:
        """This attempt for sweep.json."""
        fields = ("attempt", "status", "where", "host", "devices", "slurm_job", "submitted", "started", "ended",
                  "seconds", "exit", "log", "stderr", "notebook", "note")
        return {k: getattr(self, k) for k in fields if getattr(self, k) is not None}


def _exit_name(code: int | None) -> int | str | None:
    """A Popen return code as it reads: -9 -> "SIGKILL"."""
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return code
    return code


# --- local: a pool of CPU or GPU slots on this machine -----------------------------------------------------


class LocalLauncher:
    """Runs on this machine, at most one per slot at once, each in its own process (``python -m
    hybridlib.launch run``) with its output in ``.launch/<run>/attempt-<n>.log``.

    Slots: ``gpus`` (device ids) grouped by ``gpus_per_run``, each group a run's ``CUDA_VISIBLE_DEVICES``; else
    ``workers`` CPU slots. The CPU threads are split between the slots (``OMP_NUM_THREADS``, which torch's
    thread count follows) unless ``split_threads`` is False (the sequential default keeps the machine's own).
    """

    poll_s = 0.5

    def __init__(self, workers: int | None = None, gpus: list[str] | None = None, gpus_per_run: int = 1,
                 name: str = "local", split_threads: bool = True, cpus: int | None = None):
        if gpus is not None:
            gpus = [g.strip() for g in gpus if g.strip()]
            if not gpus or len(set(gpus)) != len(gpus):
                raise ParameterError(f"--gpus {','.join(gpus)}: give distinct device ids, e.g. --gpus 0,1,2,3")
            if gpus_per_run < 1 or len(gpus) % gpus_per_run:
                raise ParameterError(f"--gpus-per-run {gpus_per_run}: the {len(gpus)} GPUs {','.join(gpus)} must "
                                     f"split into whole runs (a divisor of {len(gpus)})")
            _check_gpu_ids(gpus)
            groups = [gpus[i:i + gpus_per_run] for i in range(0, len(gpus), gpus_per_run)]
            self.slots = [{"CUDA_VISIBLE_DEVICES": ",".join(group)} for group in groups]
            self.nproc = gpus_per_run
        else:
            if workers is not None and workers < 1:
                raise ParameterError(f"--workers {workers}: must be 1 or more")
            self.slots = [{} for _ in range(workers or 1)]
            self.nproc = 1
        cpus = cpus or len(os.sched_getaffinity(0))
        self.threads = max(1, cpus // (len(self.slots) * self.nproc)) if split_threads else None
        if self.threads:
            for slot in self.slots:
                slot.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        self.name = name
        self.concurrent = len(self.slots) > 1
        self._free: queue.Queue = queue.Queue()
        for index in range(len(self.slots)):
            self._free.put(index)
        self._pool = ThreadPoolExecutor(max_workers=len(self.slots), thread_name_prefix="hybridlib-launch")
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        if self.name == "sequential":
            return "sequential: one run at a time on this machine"
        threads = f", {self.threads} CPU thread(s) per process" if self.threads else ""
        if "CUDA_VISIBLE_DEVICES" in self.slots[0]:
            per = "torchrun over " if self.nproc > 1 else ""
            return (f"local: {len(self.slots)} runs at once, {per}GPUs "
                    f"{' | '.join(s['CUDA_VISIBLE_DEVICES'] for s in self.slots)}{threads}")
        return f"local: {len(self.slots)} runs at once on CPU slots{threads}"

    def earlier(self, tasks: dict[str, Task]) -> dict[str, Placement]:
        return {}  # a local run of an earlier invocation either finished, failed, or still holds its lock

    def launch(self, tasks: list[Task]) -> dict[str, Placement]:
        placed = {}
        for task in tasks:
            placement = placed[task.run] = Placement(task, self.name)
            self._pool.submit(self._work, placement)
        return placed

    def refresh(self, placements) -> None:
        pass  # the pool's threads update their placements as the processes start and end

    def _work(self, placement: Placement) -> None:
        task = placement.task
        index = self._free.get()
        slot = self.slots[index]
        try:
            files = launch_dir(task.folder)
            files.mkdir(parents=True, exist_ok=True)
            log, result = files / f"attempt-{task.attempt}.log", files / f"attempt-{task.attempt}.json"
            result.unlink(missing_ok=True)
            env = {**os.environ, **slot, LAUNCHER_ENV: self.name, "PYTHONUNBUFFERED": "1"}
            command = [sys.executable, "-m", "hybridlib.launch", "run", task.params_file, "--result", str(result),
                       "--nproc", str(self.nproc), "--lock-wait", "60" if task.attempt > 1 else "0"]
            devices = slot.get("CUDA_VISIBLE_DEVICES")
            host = socket.gethostname()
            where = (f"{host} (CUDA_VISIBLE_DEVICES={devices})" if devices else
                     f"{host} (CPU slot {index + 1} of {len(self.slots)})" if self.concurrent else host)
            placement.mark_running(host=host, devices=devices, log=str(log), where=where)
            with open(log, "w") as out:
                process = subprocess.Popen(command, cwd=task.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
            with self._lock:
                self._procs[task.run] = process
            code = process.wait()
            outcome = json.loads(result.read_text()) if result.exists() else None
            placement.finish(outcome, _exit_name(code),
                             f"the run's process ended without a result (exit {_exit_name(code)}); see {log}")
        except Exception as err:  # the launcher itself failed to start the process: not the run's fault
            placement.finish(None, None, f"could not start the run: {type(err).__name__}: {err}")
        finally:
            with self._lock:
                self._procs.pop(task.run, None)
            self._free.put(index)

    def stop(self) -> None:
        """Stop every running run (their process groups; each kernel follows its parent within a second)."""
        with self._lock:
            processes = list(self._procs.values())
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)


def _check_gpu_ids(gpus: list[str]) -> None:
    """Refuse device numbers this machine does not have (a run would silently fall back to the CPU)."""
    import torch

    count = torch.cuda.device_count()
    if not count:
        print(f"warning: no CUDA device is visible here: the runs use the CPU, and --gpus {','.join(gpus)} only "
              f"labels their slots (CUDA_VISIBLE_DEVICES)", file=sys.stderr, flush=True)
        return
    missing = [g for g in gpus if g.isdigit() and int(g) >= count]
    if missing:
        raise ParameterError(f"--gpus {','.join(gpus)}: this machine has {count} GPU(s) (0-{count - 1}); "
                             f"{','.join(missing)} do not exist")


# --- Slurm: a job array through submitit -------------------------------------------------------------------


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
            placement = placed[task.run] = Placement(task, self.name, slurm_job=job.job_id, submitted=now(),
                                                     **self._logs(job.job_id))
            self._write_record(placement, collected=False)
        return placed

    def _logs(self, job_id: str) -> dict:
        paths = self.submitit.core.utils.JobPaths(self.folder, job_id=job_id, task_id=0)
        return {"log": str(paths.stdout), "stderr": str(paths.stderr)}

    def _write_record(self, placement: Placement, collected: bool) -> None:
        path = self._record_path(placement.task)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"job_id": placement.slurm_job, "folder": str(self.folder),
                                   "attempt": placement.attempt, "submitted": placement.submitted,
                                   "collected": collected, "status": placement.status}, indent=1) + "\n")
        tmp.replace(path)

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
                placement.seconds = _seconds_between(placement.started, placement.ended)
        else:  # the job's Python failed outside the run (environment missing on the node, say)
            last = str(value).strip().splitlines()[-1:] or [""]
            placement.finish(None, self._final_state(job),
                             f"Slurm job {job} failed outside the run: {last[0]}; see {placement.stderr}")

    def stop(self) -> None:
        pass  # Slurm jobs keep running without the driver; the same command collects them later


def _seconds_between(start: str, end: str) -> float:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    import calendar

    return float(calendar.timegm(time.strptime(end, fmt)) - calendar.timegm(time.strptime(start, fmt)))


# --- the processes a launcher starts -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m hybridlib.launch run PARAMS.yaml --result R.json``: what a local launcher starts per run;
    ``python -m hybridlib.launch rank PARAMS.yaml --result-dir D``: one torchrun rank of a multi-GPU run."""
    parser = argparse.ArgumentParser(prog="python -m hybridlib.launch", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one run here (papermill, or torchrun with --nproc > 1)")
    run.add_argument("params_file")
    run.add_argument("--result", required=True, help="where to write how it ended (JSON)")
    run.add_argument("--nproc", type=int, default=1)
    run.add_argument("--lock-wait", type=float, default=0.0)
    rank = sub.add_parser("rank", help="one torchrun rank (used by `run --nproc N`)")
    rank.add_argument("params_file")
    rank.add_argument("--result-dir", required=True)
    args = parser.parse_args(argv)
    if args.command == "rank":
        return _rank_main(args.params_file, args.result_dir)
    try:
        outcome = execute(args.params_file, nproc=args.nproc, lock_wait_s=args.lock_wait)
    except (ParameterError, FileNotFoundError) as err:  # an unreadable parameter file: not worth retrying
        outcome = {**where_am_i(), "status": "failed", "error": f"{type(err).__name__}: {err}", "ended": now()}
        print(f"hybridlib.launch: failed: {outcome['error']}", flush=True)
    target = Path(args.result)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcome, indent=1) + "\n")
    tmp.replace(target)
    return _EXIT[outcome["status"]]


if __name__ == "__main__":
    sys.exit(main())
