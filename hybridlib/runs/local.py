"""Local launcher: a pool of CPU or GPU slots on this machine, one run per slot at once.

``LocalLauncher(workers=1, name="sequential")`` (the sweep's default): one run at a time;
``LocalLauncher(workers=K)``: K runs at once over CPU slots, the CPU threads split between them
(``OMP_NUM_THREADS``); ``LocalLauncher(gpus=["0", "1", ...], gpus_per_run=N)``: one run per group of N GPUs,
each with its own ``CUDA_VISIBLE_DEVICES``. Each run is a subprocess ``python -m hybridlib.runs.execute run``
(see :mod:`hybridlib.runs.execute`); its output goes to ``.launch/<run>/attempt-<n>.log``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from .config import ParameterError
from .execute import LAUNCHER_ENV, Placement, Task, _exit_name
from .runlock import launch_dir


class LocalLauncher:
    """Runs on this machine, at most one per slot at once, each in its own process (``python -m
    hybridlib.runs.execute run``) with its output in ``.launch/<run>/attempt-<n>.log``.

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
            command = [sys.executable, "-m", "hybridlib.runs.execute", "run", task.params_file, "--result", str(result),
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


