"""Run a sweep: the training notebook once per point with papermill, then the analysis notebooks.

    python -m hybridlib.sweep params/demo.yaml            # every point, one at a time
    python -m hybridlib.sweep params/demo.yaml --only mono,cross --dry-run
    python -m hybridlib.sweep S.yaml --launcher local --workers 2                 # 2 runs at once (CPU)
    python -m hybridlib.sweep S.yaml --launcher local --gpus 0,1,2,3 [--gpus-per-run 2]
    python -m hybridlib.sweep S.yaml --launcher slurm --partition P --gpus-per-run 1 --time-min 60 \
        [--cpus-per-run 8] [--max-parallel 8] [--slurm-arg account=X ...] [--no-wait]

A sweep file::

    sweep: demo                    # a name
    output_dir: outputs/demo       # runs go to output_dir/<run name>/
    extends: cpu-defaults.yaml     # optional: a flat parameter file (relative to this one) under everything
    base: {steps: 150}             # optional: parameters shared by every point
    seeds: [0, 1, 2]               # optional: repeat every trained point once per seed
    runs:                          # point name -> its own parameters
      baseline: {steps: 0}
      mono: {ratio_mono: 1.0, ratio_cross: 0.0, ratio_multi: 0.0}

With ``seeds``, a trained point ``mono`` runs as ``mono-s0``, ``mono-s1``, ... (parameter ``seed`` set,
parameter ``point`` = ``mono``, so the analysis pools them); a point with ``steps: 0`` evaluates a fixed
model, which no seed changes, and runs once. Without ``seeds`` each point runs once with its own seed.
Every point's parameters are resolved and checked before anything runs. A point whose folder already
holds a ``metrics.json`` with identical parameters is skipped; a folder whose ``metrics.json`` or
``params.json`` cannot be read is moved aside (kept, as ``<run>.damaged-<time>``) and the run redone; a run that
fails does not stop the others. The analysis notebooks run only when some run of the sweep has finished.

Where the runs execute is a launcher's business (``hybridlib.runs``: execute, local, slurm): by default one after another on this
machine; ``--launcher local`` runs several at once over CPU or GPU slots, ``--launcher slurm`` sends them to
Slurm as one job array. Everything else stays here, whichever launcher places the runs: validation, skipping,
setting damaged folders aside, filling the shared caches before runs start together, relaunching a run whose
process died (``--retries``; it resumes from its checkpoint), a live progress line, ``sweep.json``, the
summary, and 03-05 once every run has ended. A run folder that another process is running (it holds the
folder's lock) is reported as running elsewhere and left alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

from ..analysis.results import load_runs, metric_key
from ..analysis.tasks import sweep_tasks, task_scores
from ..cache import file_lock
from ..paths import find_project_root
from ..evaluation.tasks import get_task
from ..parameters import differing_params
from ..records import (DamagedRecord, added_tasks, finished_with, read_record, record_damage, set_aside, utc_now,
                       write_atomic)
from .config import ParameterError, load_yaml, resolve_params
from .execute import TERMINAL, Placement, Task, failure_line, run_notebook
from .local import LocalLauncher
from .runlock import launch_dir, run_folder_holder

ANALYSIS_NOTEBOOKS = ("03_evaluation.ipynb", "04_bias_analysis.ipynb", "05_explore.ipynb")
_SWEEP_KEYS = {"sweep", "output_dir", "extends", "base", "seeds", "runs"}


def load_sweep(path: str | Path) -> tuple[str, Path, dict[str, dict], dict]:
    """Name, output folder, per-run parameter overrides (before defaults) and the shared part of a sweep file."""
    path = Path(path)
    spec = load_yaml(path)
    unknown = sorted(set(spec) - _SWEEP_KEYS)
    if unknown:
        raise ParameterError(f"{path}: unknown sweep keys {unknown}; a sweep file has {sorted(_SWEEP_KEYS)}")
    if not isinstance(spec.get("runs"), dict) or not spec["runs"]:
        raise ParameterError(f"{path}: 'runs' must map run names to their parameters")
    name = spec.get("sweep") or path.stem
    output_dir = Path(spec.get("output_dir") or f"outputs/{name}")
    shared = load_yaml(path.parent / spec["extends"]) if spec.get("extends") else {}
    shared.update(spec.get("base") or {})
    seeds = spec.get("seeds")
    if seeds is not None and (
        not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ParameterError(f"{path}: seeds={seeds!r}: must be a non-empty list of distinct integers, e.g. [0, 1, 2]")
    points = {str(p): {**shared, **(o or {}), "output_dir": str(output_dir)} for p, o in spec["runs"].items()}
    runs = {p: {**params, "run_name": p, "point": p} for p, params in points.items()
            if seeds is None or params.get("steps", 1) == 0}
    for seed in seeds or []:  # seed-major order: a sweep cut short still has every point at the first seeds
        for point, params in points.items():
            if params.get("steps", 1) != 0:
                runs[f"{point}-s{seed}"] = {**params, "run_name": f"{point}-s{seed}", "point": point, "seed": seed}
    return name, output_dir, runs, shared


def run_sweep(path: str | Path, only: list[str] | None = None, dry_run: bool = False, launcher=None,
              retries: int = 1, wait: bool = True, analysis: bool = True) -> pd.DataFrame:
    """Run every point of a sweep file; return (and print) a summary table.

    validate every run -> for each run: skip if finished, leave alone if running elsewhere, else (set aside if
    damaged) queue it -> fill the shared caches (when runs start together) -> the launcher places the queued
    runs (``launcher``: a ``hybridlib.runs`` launcher; default one at a time here), relaunching a run whose
    process died up to ``retries`` times -> the analysis notebooks once every run has ended (only when some
    run of the sweep has finished; ``analysis=False`` skips them) -> history in sweep.json -> summary,
    failures first. ``wait=False`` (Slurm's ``--no-wait``) returns once the jobs are submitted; the same call
    later collects them.
    """
    launcher = launcher or LocalLauncher(name="sequential", split_threads=False)
    root = find_project_root()
    name, output_dir, runs, shared = load_sweep(path)
    runs = _select(runs, only)
    resolved = _resolve_all(path, runs)  # every point checked before the first one runs
    output_dir = root / output_dir
    started = time.perf_counter()
    started_at = utc_now()
    tasks = {run: Task(run, str(launch_dir(output_dir / run) / "params.yaml"), str(output_dir / run), str(root))
             for run in runs}
    earlier = {} if dry_run else launcher.earlier(tasks)  # Slurm jobs an earlier invocation left to collect
    status, placements, todo = {}, {}, []
    for index, (run, overrides) in enumerate(runs.items(), 1):
        folder = output_dir / run
        head = f"[{index}/{len(runs)}] {run}"
        if run in earlier:
            print(f"{head}: Slurm job {earlier[run].slurm_job} (submitted {earlier[run].submitted}) of an earlier "
                  f"invocation: collecting it", flush=True)
            continue
        damage = record_damage(folder)  # a folder whose records cannot be read is never finished
        if not damage and finished_with(folder, resolved[run]):
            status[run] = ("skipped (finished, same parameters)", None)
            print(f"{head}: already finished with these parameters, skipped", flush=True)
            continue
        holder = run_folder_holder(folder)
        if holder:  # another sweep, a notebook, a job: never two processes in one run folder
            status[run] = (f"running elsewhere ({holder})", None)
            print(f"{head}: running elsewhere ({holder}), left alone", flush=True)
            continue
        own = {k: v for k, v in overrides.items() if k not in ("run_name", "output_dir", "point") and shared.get(k, None) != v}
        print(f"{head}: {json.dumps(own)}", flush=True)
        if not damage and (folder / "metrics.json").exists():  # finished, with other parameters
            added = added_tasks(folder, resolved[run])
            if added:
                print(f"    finished; adds {added}, evaluated with the weights it kept (no training)", flush=True)
            else:
                changed = sorted(differing_params(read_record(folder / "metrics.json")["params"], resolved[run]))
                where = "would be moved" if dry_run else f"moved to {_display_path(replace_run(folder), root)}"
                print(f"    finished with other parameters ({', '.join(changed)}) and no weights kept to reuse: "
                      f"{where}; the run is redone", flush=True)
        if damage:  # kept for inspection, never deleted
            aside = "would be moved aside" if dry_run else f"moved {run} aside to {set_aside(folder).name}"
            print(f"    {damage}: {aside}; the run is redone", flush=True)
        if dry_run:
            status[run] = ("dry run", None)
            continue
        todo.append(run)
    if not dry_run:
        if todo and launcher.concurrent:
            _fill_shared_caches([resolved[run] for run in todo])
        for run in todo:  # the flat parameter file a launcher places (what --export writes)
            _write_params_file(Path(tasks[run].params_file), resolved[run])
        if todo or earlier:
            print(f"launcher: {launcher.describe()}", flush=True)
        _place(launcher, [tasks[run] for run in todo], earlier, retries, wait, placements)
        status.update({run: _status_of(attempts) for run, attempts in placements.items()})
    pending = {run: s for run, (s, _) in status.items() if s.startswith(("running elsewhere", "submitted"))}
    analysis_skipped = analysis_deferred = None
    if not dry_run and analysis:
        if pending:  # 03-05 compare every run: whoever ends the last run runs them
            analysis_deferred = (f"{', '.join(ANALYSIS_NOTEBOOKS)} not run yet: {len(pending)} run(s) still "
                                 f"queued or running ({', '.join(pending)}); run the same command again once they "
                                 f"have ended to collect them and run the analysis")
            status.update({notebook: ("not run yet", analysis_deferred) for notebook in ANALYSIS_NOTEBOOKS})
        elif _has_finished_run(output_dir):
            with file_lock(output_dir / ".launch" / "analysis.lock"):  # two invocations never write 03-05 at once
                for notebook in ANALYSIS_NOTEBOOKS:
                    status[notebook] = _run_notebook(root, notebook, output_dir, {
                        "sweep_dir": _display_path(output_dir, root),
                        "figures_dir": _display_path(output_dir / "figures", root)})
                    if status[notebook][1]:
                        print(f"{notebook} FAILED: {status[notebook][1]}", flush=True)
        else:  # the notebooks would only fail on an empty sweep and hide the real failures
            analysis_skipped = (f"{', '.join(ANALYSIS_NOTEBOOKS)} not run: no run of this sweep has finished "
                                f"(no readable */metrics.json in {output_dir})")
            status.update({notebook: ("not run", analysis_skipped) for notebook in ANALYSIS_NOTEBOOKS})
    elapsed = time.perf_counter() - started
    summary = _summary(output_dir, status, placements if launcher.concurrent else None)
    if not dry_run:
        _record_invocation(output_dir / "sweep.json", name, path, started_at, elapsed, status, placements,
                           launcher.describe(), retries)
    failures = {k: e for k, (s, e) in status.items() if s == "FAILED"}
    summary.attrs["failures"] = failures
    summary.attrs["analysis_skipped"] = analysis_skipped
    summary.attrs["pending"] = pending
    summary.attrs["placements"] = placements
    print(f"\nsweep {name!r}: {len(runs)} points in {elapsed / 60:.1f} min -> {output_dir}")
    if failures:  # first: what needs attention
        print(f"\n{len(failures)} FAILED:")
        for run, error in failures.items():
            print(f"  {run}: {error}")
    for message in (analysis_skipped, analysis_deferred):
        if message:
            print(f"\n{message}")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3,
                           "display.max_colwidth", 60):
        print(f"\n{summary.to_string()}")
    return summary


def replace_run(folder: Path) -> Path:
    """Move a finished run that is to be redone into ``<sweep>/.launch/replaced/<run>-<UTC time>`` (kept, out of git
    and out of the sweep); the new place."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = folder.parent / ".launch" / "replaced" / f"{folder.name}-{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(target)
    return target


def _write_params_file(path: Path, params: dict) -> None:
    import yaml

    write_atomic(path, yaml.safe_dump(params, sort_keys=False))


def _place(launcher, tasks: list[Task], earlier: dict[str, Placement], retries: int, wait: bool,
           placements: dict[str, list[Placement]]) -> None:
    """Hand the tasks to the launcher and follow them to their end (or, without ``wait``, to their submission).

    A run whose process died is launched again while it has attempts left (``retries``); it resumes from its
    checkpoint. Every attempt lands in ``placements[run]``. A live line counts queued / running / finished /
    failed runs (tqdm, on a terminal); each start and end is one line; the runs' own output is in their logs.
    """
    active: dict[str, Placement] = {**earlier, **launcher.launch(tasks)}
    if not active:
        return
    progress = _Progress(len(active))
    announced: set[tuple[str, int]] = set()
    try:
        while active:
            launcher.refresh(list(active.values()))
            for run, placement in list(active.items()):
                if placement.status == "running" and (run, placement.attempt) not in announced:
                    announced.add((run, placement.attempt))
                    again = f", attempt {placement.attempt}" if placement.attempt > 1 else ""
                    progress.write(f"    {run}: running on {placement.where}{again}; log {placement.log}")
                if placement.status not in TERMINAL:
                    continue
                del active[run]
                placements.setdefault(run, []).append(placement)
                if hasattr(launcher, "collected"):
                    launcher.collected(placement)
                if placement.status == "died" and placement.attempt <= retries:
                    progress.write(f"    {run}: its process died ({placement.exit}): {placement.error}; launching it "
                                   f"again (attempt {placement.attempt + 1} of {retries + 1}), it resumes from its "
                                   f"checkpoint")
                    active.update(launcher.launch([placement.task.again()]))
                    continue
                progress.done(placement)
            progress.show(active.values())
            if not wait:
                break  # submitted; a later invocation collects them
            if active:
                time.sleep(launcher.poll_s)
    except KeyboardInterrupt:
        launcher.stop()
        print(f"\ninterrupted: {len(active)} run(s) stopped or left to their launcher ({', '.join(active)})",
              flush=True)
        raise
    finally:
        progress.close()
    for run, placement in active.items():  # still queued or running (--no-wait)
        placements.setdefault(run, []).append(placement)


class _Progress:
    """The live line (tqdm, on a terminal) and one line per run that ends, with the counts so far."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self.tqdm = tqdm
        self.total, self.ok, self.failed = total, 0, 0
        self.started = time.monotonic()
        self.bar = tqdm(total=total, desc="runs", unit="run", file=sys.stderr, disable=not sys.stderr.isatty(),
                        bar_format="{desc} {n}/{total} ended |{bar:16}| {postfix} [{elapsed}]")
        self.queued = self.running = 0

    def counts(self) -> str:
        elapsed = time.monotonic() - self.started
        return (f"queued {self.queued} · running {self.running} · finished {self.ok} · failed {self.failed} · "
                f"{int(elapsed // 60)}:{int(elapsed % 60):02d}")

    def write(self, line: str) -> None:
        self.tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()

    def done(self, placement: Placement) -> None:
        if placement.status == "ok":
            self.ok += 1
            seconds = f" ({placement.seconds:.0f} s)" if placement.seconds is not None else ""
            self.write(f"    {placement.run}: ok{seconds}{f', {placement.note}' if placement.note else ''}")
        elif placement.status == "busy":
            self.write(f"    {placement.run}: {placement.error}, left alone")
        else:
            self.failed += 1
            self.write(f"    {placement.run}: FAILED: {_status_of([placement])[1]}")
        self.bar.update(1)

    def show(self, active) -> None:
        active = list(active)
        self.running = sum(p.status == "running" for p in active)
        self.queued = len(active) - self.running
        self.bar.set_postfix_str(self.counts(), refresh=True)

    def close(self) -> None:
        self.bar.close()
        if self.total:
            print(f"runs: {self.counts()}", flush=True)


def _status_of(attempts: list[Placement]) -> tuple[str, str | None]:
    """(status, error) of a run from its attempts in this invocation, for the summary and sweep.json."""
    last = attempts[-1]
    again = f", attempt {last.attempt}" if last.attempt > 1 else ""
    if last.status == "ok":
        if last.note == "already finished with these parameters":
            return "skipped (finished, same parameters)", None
        seconds = f"{last.seconds:.0f} s" if last.seconds is not None else "collected"
        return f"ok ({seconds}{again})", None
    if last.status == "busy":
        return last.error or "running elsewhere", None
    logs = f"log: {last.log}" + (f"; stderr: {last.stderr}" if last.stderr else "")
    if last.status == "failed":
        return "FAILED", f"{last.error} ({logs})"
    if last.status == "died":
        return "FAILED", (f"the run's process died ({last.exit}) on attempt {last.attempt}, no attempts left "
                          f"(--retries): {last.error}" + (f" ({logs})" if str(last.log) not in (last.error or "")
                                                          else ""))
    return f"submitted (Slurm job {last.slurm_job}, {last.status})", None


def _fill_shared_caches(runs: list[dict]) -> None:
    """Fill, once and before the runs start together, what they share (``experiment.warm_caches``: benchmark
    files, the converted embedded model, streamed pair tables, token ids), once per distinct set-up. (Each cache
    also locks its own writes, so this is about not doing the work K times in parallel, not about correctness.)"""
    from .experiment import warm_caches

    tick = time.perf_counter()
    print("filling the shared caches before the runs start (benchmarks, models, training tables, token ids)",
          flush=True)
    setups = warm_caches(runs)
    print(f"shared caches ready: {setups} set-up(s) for {len(runs)} run(s) ({time.perf_counter() - tick:.0f} s)",
          flush=True)


def _run_notebook(root: Path, notebook: str, folder: Path, parameters: dict) -> tuple[str, str | None]:
    """Execute ``notebooks/<notebook>`` into ``folder``: (status, None) or ("FAILED", one-line error)."""
    tick = time.perf_counter()
    try:
        run_notebook(root, notebook, folder, parameters)
    except Exception as err:  # one failing notebook must not stop the sweep
        return "FAILED", failure_line(err, folder / notebook)
    return f"ok ({time.perf_counter() - tick:.0f} s)", None


def _has_finished_run(output_dir: Path) -> bool:
    """Whether the sweep folder holds a run the analysis notebooks can read (as they read it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a skipped damaged run is reported with the summary
        try:
            return bool(load_runs(output_dir))
        except FileNotFoundError:
            return False


def export_points(path: str | Path, folder: str | Path, only: list[str] | None = None) -> list[Path]:
    """Write every run's resolved flat parameters to ``folder/<run>.yaml``; returns the files."""
    import yaml

    resolved = _resolve_all(path, _select(load_sweep(path)[2], only))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for run, params in resolved.items():
        written.append(write_atomic(folder / f"{run}.yaml", yaml.safe_dump(params, sort_keys=False)))
    return written


def _select(runs: dict[str, dict], only: list[str] | None) -> dict[str, dict]:
    """The runs named in ``only`` (run names, or point names meaning all their seeds); all without it."""
    if not only:
        return runs
    points = {v["point"] for v in runs.values()}
    missing = sorted(set(only) - set(runs) - points)
    if missing:
        raise ParameterError(f"--only names unknown runs {missing}; the sweep has points {sorted(points)} "
                             f"and runs {sorted(runs)}")
    return {k: v for k, v in runs.items() if k in only or v["point"] in only}


def _resolve_all(path, runs: dict[str, dict]) -> dict[str, dict]:
    """Every run's resolved parameters; the first invalid one raises, naming the file and the run."""
    resolved = {}
    for run, overrides in runs.items():
        try:
            resolved[run] = resolve_params(overrides)
        except ParameterError as err:
            raise ParameterError(f"{path}, run {run!r}: {err}") from None
    return resolved


def _record_invocation(path: Path, name: str, sweep_file, started_at: str, elapsed: float, status: dict,
                       placements: dict[str, list[Placement]], launcher: str, retries: int) -> None:
    """Append this invocation (start, wall time, launcher, each point's status) to the sweep's history file.

    A run placed in this invocation also records where and when it ran, its log and notebook, and every
    attempt. A history that cannot be read is kept beside it as ``sweep.json.damaged-<time>`` and a new one
    begins. Invocations running at once take turns (a lock beside it).
    """
    runs = {}
    for key, (state, error) in status.items():
        runs[key] = {"status": state, "error": error}
        if key in placements:
            attempts = [p.record() for p in placements[key]]
            last = dict(attempts[-1])
            last.pop("status", None)
            runs[key].update(last, attempts=attempts)
    with file_lock(path.parent / ".launch" / "sweep.json.lock"):
        history = {"sweep": name, "invocations": []}
        if path.exists():
            try:
                history = read_record(path, ("invocations",))
            except DamagedRecord as err:
                print(f"warning: {err}: kept it as {set_aside(path).name}; a new history begins", flush=True)
        history["invocations"].append({
            "file": str(sweep_file), "started": started_at, "wall_seconds": round(elapsed, 1),
            "launcher": launcher, "retries": retries, "status": runs,
        })
        write_atomic(path, json.dumps(history, indent=1) + "\n")  # a killed sweep leaves the previous history whole


def _display_path(path: Path, root: Path) -> str:
    """``path`` relative to the project root when inside it (what notebooks record), else absolute."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _summary(output_dir: Path, status: dict, placements: dict | None = None) -> pd.DataFrame:
    where = {run: attempts[-1].where for run, attempts in (placements or {}).items()}
    try:
        runs = load_runs(output_dir)
    except FileNotFoundError:
        summary = pd.DataFrame({"status": {k: s for k, (s, _) in status.items()}})
    else:
        # one row per run: the first task's first three scores (LAReQA: mAP mono, cross, multi), then each other
        # task's headline, named "<task> <score>"
        tasks = sweep_tasks(runs)
        tables = {task: task_scores(runs, task) for task in tasks}
        labels = pd.concat([table["label"] for table in tables.values()]).groupby(level=0, sort=False).first()
        scores = []
        for task, table in tables.items():
            first = task == tasks[0]
            shown = [metric_key(m, s) for m, s in
                     (get_task(task).interval_metrics[:3] if first else [get_task(task).headline])]
            scores.append(table[shown].rename(columns={} if first else {k: f"{task} {k}" for k in shown}))
        summary = pd.concat([labels, *scores], axis=1).rename_axis("run")
        summary["status"] = [status.get(run, ("not in this invocation", None))[0] for run in summary.index]
    if any(where.values()):  # runs placed at once (local slots, Slurm): where each one ran
        summary["where"] = [where.get(run) or "" for run in summary.index]
    return summary


def make_launcher(args, output_dir: Path, sweep_name: str):
    """The launcher the command line asks for (None: the sequential default); ParameterError if it is inconsistent."""
    from .slurm import SlurmLauncher

    local_only = {"--workers": args.workers, "--gpus": args.gpus}
    slurm_only = {"--partition": args.partition, "--cpus-per-run": args.cpus_per_run, "--time-min": args.time_min,
                  "--max-parallel": args.max_parallel, "--slurm-arg": args.slurm_arg, "--no-wait": args.no_wait or None}
    given = lambda options: [k for k, v in options.items() if v is not None]  # noqa: E731
    if args.launcher != "local" and given(local_only):
        raise ParameterError(f"{', '.join(given(local_only))} need --launcher local")
    if args.launcher != "slurm" and given(slurm_only):
        raise ParameterError(f"{', '.join(given(slurm_only))} need --launcher slurm")
    if args.launcher is None:
        if args.gpus_per_run is not None:
            raise ParameterError("--gpus-per-run needs --launcher local (with --gpus) or --launcher slurm")
        return None
    if args.launcher == "local":
        if args.workers is not None and args.gpus is not None:
            raise ParameterError("--workers and --gpus exclude each other: CPU slots or GPU slots")
        if args.gpus_per_run is not None and args.gpus is None:
            raise ParameterError("--gpus-per-run needs --gpus (the device ids to split)")
        return LocalLauncher(workers=args.workers, gpus=args.gpus.split(",") if args.gpus is not None else None,
                             gpus_per_run=args.gpus_per_run or 1)
    extra = {}
    for item in args.slurm_arg or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"--slurm-arg {item!r}: write it as KEY=VALUE, e.g. --slurm-arg account=X")
        extra[key.strip().lstrip("-")] = value
    return SlurmLauncher(output_dir / ".launch" / "slurm", partition=args.partition,
                         gpus_per_run=1 if args.gpus_per_run is None else args.gpus_per_run,
                         time_min=args.time_min or 60, cpus_per_run=args.cpus_per_run,
                         max_parallel=args.max_parallel or 8, slurm_args=extra, job_name=f"hybridlib-{sweep_name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_file", help="a sweep YAML file, e.g. params/demo.yaml")
    parser.add_argument("--only", help="comma-separated point or run names to run (a point: all its seeds)")
    parser.add_argument("--dry-run", action="store_true", help="resolve and check parameters, run nothing")
    parser.add_argument("--export", metavar="DIR", help="write each run's resolved parameters to DIR/<run>.yaml "
                        "(for `torchrun -m hybridlib.experiment DIR/<run>.yaml`) and run nothing")
    where = parser.add_argument_group("where the runs execute (default: one at a time on this machine)")
    where.add_argument("--launcher", choices=["local", "slurm"],
                       help="local: several runs at once on this machine; slurm: a Slurm job array (submitit)")
    where.add_argument("--workers", type=int, help="local: runs at once on CPU slots (threads split between them)")
    where.add_argument("--gpus", help="local: GPU ids to run on, e.g. 0,1,2,3 (one run per --gpus-per-run of them)")
    where.add_argument("--gpus-per-run", type=int, help="GPUs per run (default 1); more than 1 runs it with torchrun")
    where.add_argument("--partition", help="slurm: the partition")
    where.add_argument("--time-min", type=int, help="slurm: each job's time limit in minutes (default 60); a job "
                       "that reaches it is requeued and resumes from its checkpoint")
    where.add_argument("--cpus-per-run", type=int, help="slurm: CPUs per job (default: the cluster's)")
    where.add_argument("--max-parallel", type=int, help="slurm: jobs of the array running at once (default 8)")
    where.add_argument("--slurm-arg", action="append", metavar="KEY=VALUE",
                       help="slurm: any other sbatch option, e.g. account=X or qos=high (repeatable)")
    where.add_argument("--no-wait", action="store_true", help="slurm: submit and exit; the same command again "
                       "collects what finished, resubmits what is missing or failed, and runs 03-05 when all are done")
    where.add_argument("--retries", type=int, default=1, help="times to relaunch a run whose process died (killed, "
                       "lost node, cancelled job; default 1); it resumes from its checkpoint. A run that fails on "
                       "its own (bad parameters, NaN) is not retried")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    if args.export:
        try:
            for path in export_points(args.sweep_file, args.export, only=only):
                print(path)
        except (ParameterError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        if args.retries < 0:
            raise ParameterError(f"--retries {args.retries}: must be 0 or more")
        name, output_dir = load_sweep(args.sweep_file)[:2]
        launcher = make_launcher(args, find_project_root() / output_dir, name)
        summary = run_sweep(args.sweep_file, only=only, dry_run=args.dry_run, launcher=launcher,
                            retries=args.retries, wait=not args.no_wait)
    except (ParameterError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if summary.attrs.get("failures") or summary.attrs.get("analysis_skipped") else 0


if __name__ == "__main__":
    sys.exit(main())
