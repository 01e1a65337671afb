"""Where a sweep's runs execute. A launcher places one run, its flat parameter file, and reports back.

The sweep driver (``hybridlib.runs.sweep``) does everything else: it validates every point, skips finished runs,
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
subprocess ``python -m hybridlib.runs.execute run PARAMS.yaml``, or the Slurm job). A run on one device executes
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
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..parameters import DEFAULTS
from ..progress import text_bars
from ..records import finished_with, record_damage, utc_now, where_am_i, write_atomic
from .config import ParameterError, load_yaml
from .runlock import RunFolderBusy, launch_dir, run_folder_holder

LAUNCHER_ENV = "HYBRIDLIB_LAUNCHER"  # tells a run which launcher started it (metrics.json environment)
TRAIN_NOTEBOOK = "02_train.ipynb"
TERMINAL = ("ok", "failed", "died", "busy")  # a placement in one of these states is over
_EXIT = {"ok": 0, "failed": 1, "busy": 75, "died": 70}  # exit status of `python -m hybridlib.runs.execute run`


# --- running one run, here ---------------------------------------------------------------------------------


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
    from ..paths import find_project_root

    root = Path(root) if root is not None else find_project_root()
    record = {**where_am_i(), "started": utc_now(), "notebook": None, "error": None}
    params = load_yaml(params_file)
    folder = root / params["output_dir"] / params["run_name"]
    holder = run_folder_holder(folder)
    deadline = time.monotonic() + lock_wait_s
    while holder and time.monotonic() < deadline:
        time.sleep(1)
        holder = run_folder_holder(folder)
    if holder:
        return {**record, "status": "busy", "error": f"running elsewhere ({holder})", "ended": utc_now()}
    if not record_damage(folder) and finished_with(folder, params):
        return {**record, "status": "ok", "note": "already finished with these parameters", "ended": utc_now()}
    if nproc > 1:
        status, error = _execute_torchrun(Path(params_file), nproc, folder, root)
    else:
        record["notebook"] = str(folder / TRAIN_NOTEBOOK)
        status, error = _execute_notebook(params, folder, root)
    print(f"hybridlib.runs.execute: {params['run_name']}: {status}" + (f": {error}" if error else ""), flush=True)
    return {**record, "status": status, "error": error, "ended": utc_now()}


def run_notebook(root: Path, notebook: str, folder: Path, parameters: dict, stream: bool = False) -> Path:
    """papermill of ``notebooks/<notebook>`` into ``folder`` (the training notebook of a run, the analysis notebooks
    of a sweep); raises what papermill raises. ``stream``: the kernel's output goes to this process's stdout and
    stderr (a run's log). The executed notebook is read later, not watched: text progress bars, not widgets."""
    import papermill

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / notebook
    streams = {"stdout_file": sys.stdout, "stderr_file": sys.stderr} if stream else {}
    with text_bars():
        papermill.execute_notebook(str(root / "notebooks" / notebook), str(target), parameters=parameters,
                                   cwd=str(root), kernel_name="python3", progress_bar=False, **streams)
    return target


def _execute_notebook(params: dict, folder: Path, root: Path) -> tuple[str, str | None]:
    """The run's training notebook into its folder, its output streamed to this process's stdout/stderr."""
    from papermill.exceptions import PapermillExecutionError

    notebook = folder / TRAIN_NOTEBOOK
    try:
        run_notebook(root, TRAIN_NOTEBOOK, folder, notebook_parameters(params), stream=True)
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
               "-m", "hybridlib.runs.execute", "rank", str(params_file), "--result-dir", str(ranks)]
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
    """One torchrun rank: ``experiment.run_file`` (what ``python -m hybridlib.experiment`` runs), and a file saying
    how it ended."""
    from .experiment import run_file

    rank = int(os.environ.get("RANK", "0"))
    target = Path(result_dir) / f"rank-{rank}.json"

    def report(status: str, error: str | None = None) -> None:
        write_atomic(target, json.dumps({"status": status, "error": error, **where_am_i()}) + "\n")

    def terminated(signum, frame):  # torchrun stopping the other ranks after one failed, or a preemption
        report("terminated", f"signal {signal.Signals(signum).name}")
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    try:
        run_file(params_file)
    except RunFolderBusy as err:
        report("busy", f"running elsewhere ({err})")
        raise
    except Exception as err:
        report("failed", failure_line(err, None))
        raise
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
        self.started = self.started or utc_now()
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
        self.ended = utc_now()
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


# --- the processes a launcher starts -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m hybridlib.runs.execute run PARAMS.yaml --result R.json``: what a local launcher starts per run;
    ``python -m hybridlib.runs.execute rank PARAMS.yaml --result-dir D``: one torchrun rank of a multi-GPU run."""
    parser = argparse.ArgumentParser(prog="python -m hybridlib.runs.execute", description=main.__doc__)
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
        outcome = {**where_am_i(), "status": "failed", "error": f"{type(err).__name__}: {err}", "ended": utc_now()}
        print(f"hybridlib.runs.execute: failed: {outcome['error']}", flush=True)
    target = Path(args.result)
    write_atomic(target, json.dumps(outcome, indent=1) + "\n")
    return _EXIT[outcome["status"]]


if __name__ == "__main__":
    sys.exit(main())
