"""Run a sweep: the training notebook once per point with papermill, then the analysis notebooks.

    python -m hybridlib.sweep params/demo.yaml            # every point
    python -m hybridlib.sweep params/demo.yaml --only mono,cross --dry-run

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
holds a ``metrics.json`` with identical parameters is skipped; one that fails does not stop the others.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from .analysis import find_project_root, load_runs, scores_table
from .config import ParameterError, differing_params, load_yaml, resolve_params

TRAIN_NOTEBOOK = "02_train.ipynb"
ANALYSIS_NOTEBOOKS = ("03_evaluation.ipynb", "04_bias_analysis.ipynb")
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


def _finished_with(folder: Path, params: dict) -> bool:
    metrics = folder / "metrics.json"
    return metrics.exists() and not differing_params(json.loads(metrics.read_text())["params"], params)


def run_sweep(path: str | Path, only: list[str] | None = None, dry_run: bool = False) -> pd.DataFrame:
    """Run every point of a sweep file; return (and print) a summary table."""
    import papermill

    root = find_project_root()
    name, output_dir, runs, shared = load_sweep(path)
    runs = _select(runs, only)
    resolved = _resolve_all(path, runs)  # every point checked before the first one runs
    output_dir = root / output_dir
    started = time.perf_counter()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {}
    for index, (run, overrides) in enumerate(runs.items(), 1):
        folder = output_dir / run
        if _finished_with(folder, resolved[run]):
            status[run] = ("skipped (finished, same parameters)", None)
            print(f"[{index}/{len(runs)}] {run}: already finished with these parameters, skipped", flush=True)
            continue
        own = {k: v for k, v in overrides.items() if k not in ("run_name", "output_dir", "point") and shared.get(k, None) != v}
        print(f"[{index}/{len(runs)}] {run}: {json.dumps(own)}", flush=True)
        if dry_run:
            status[run] = ("dry run", None)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        notebook = folder / TRAIN_NOTEBOOK
        tick = time.perf_counter()
        try:
            papermill.execute_notebook(str(root / "notebooks" / TRAIN_NOTEBOOK), str(notebook),
                                       parameters=overrides, cwd=str(root), kernel_name="python3",
                                       progress_bar=False)
            status[run] = (f"ok ({time.perf_counter() - tick:.0f} s)", None)
        except Exception as err:  # one failing point must not stop the sweep
            status[run] = ("FAILED", f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''} -> {notebook}")
            print(f"    FAILED: {status[run][1]}", flush=True)
    if not dry_run:
        for notebook in ANALYSIS_NOTEBOOKS:
            try:
                papermill.execute_notebook(str(root / "notebooks" / notebook), str(output_dir / notebook),
                                           parameters={"sweep_dir": _display_path(output_dir, root),
                                                       "figures_dir": _display_path(output_dir / "figures", root)},
                                           cwd=str(root), kernel_name="python3", progress_bar=False)
            except Exception as err:
                status[notebook] = ("FAILED", f"{type(err).__name__} -> {output_dir / notebook}")
                print(f"{notebook} FAILED: see {output_dir / notebook}", flush=True)
    elapsed = time.perf_counter() - started
    summary = _summary(output_dir, status)
    if not dry_run:
        _record_invocation(output_dir / "sweep.json", name, path, started_at, elapsed, status)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(f"\nsweep {name!r}: {len(runs)} points in {elapsed / 60:.1f} min -> {output_dir}\n")
        print(summary.to_string())
    failures = {k: e for k, (s, e) in status.items() if s == "FAILED"}
    summary.attrs["failures"] = failures
    if failures:
        print("\nfailures:")
        for run, error in failures.items():
            print(f"  {run}: {error}")
    return summary


def export_points(path: str | Path, folder: str | Path, only: list[str] | None = None) -> list[Path]:
    """Write every run's resolved flat parameters to ``folder/<run>.yaml``; returns the files."""
    import yaml

    resolved = _resolve_all(path, _select(load_sweep(path)[2], only))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for run, params in resolved.items():
        target = folder / f"{run}.yaml"
        target.write_text(yaml.safe_dump(params, sort_keys=False))
        written.append(target)
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


def _record_invocation(path: Path, name: str, sweep_file, started_at: str, elapsed: float, status: dict) -> None:
    """Append this invocation (start, wall time, each point's status) to the sweep's history file."""
    history = json.loads(path.read_text()) if path.exists() else {"sweep": name, "invocations": []}
    history["invocations"].append({
        "file": str(sweep_file), "started": started_at, "wall_seconds": round(elapsed, 1),
        "status": {k: {"status": s, "error": e} for k, (s, e) in status.items()},
    })
    path.write_text(json.dumps(history, indent=1) + "\n")


def _display_path(path: Path, root: Path) -> str:
    """``path`` relative to the project root when inside it (what notebooks record), else absolute."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _summary(output_dir: Path, status: dict) -> pd.DataFrame:
    try:
        runs = load_runs(output_dir)
    except FileNotFoundError:
        return pd.DataFrame({"status": {k: s for k, (s, _) in status.items()}})
    tables = []
    for benchmark in sorted({b for run in runs for b in run["benchmarks"]}):
        table = scores_table(runs, benchmark)
        columns = ["label", "map_mono", "map_cross", "map_multi", "rank_distance", "top10_same_language"]
        tables.append(table[columns].assign(benchmark=benchmark))
    summary = pd.concat(tables)
    summary["status"] = [status.get(run, ("not in this invocation", None))[0] for run in summary.index]
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_file", help="a sweep YAML file, e.g. params/demo.yaml")
    parser.add_argument("--only", help="comma-separated point or run names to run (a point: all its seeds)")
    parser.add_argument("--dry-run", action="store_true", help="resolve and check parameters, run nothing")
    parser.add_argument("--export", metavar="DIR", help="write each run's resolved parameters to DIR/<run>.yaml "
                        "(for `torchrun -m hybridlib.experiment DIR/<run>.yaml`) and run nothing")
    args = parser.parse_args(argv)
    if args.export:
        try:
            for path in export_points(args.sweep_file, args.export, only=args.only.split(",") if args.only else None):
                print(path)
        except (ParameterError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        summary = run_sweep(args.sweep_file, only=args.only.split(",") if args.only else None, dry_run=args.dry_run)
    except (ParameterError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if summary.attrs.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
