"""The sweep runner end to end: papermill over the real notebooks with a tiny model on real data."""

import json
import shutil

import nbformat
import pytest

from hybridlib.runs.config import ParameterError
from hybridlib.runs.sweep import load_sweep, main, run_sweep

from conftest import TINY_SWEEP  # tests/ is on sys.path (rootdir conftest)

SWEEP = TINY_SWEEP  # baseline, cross, mono, broken (tests/conftest.py)


@pytest.mark.slow
def test_sweep_runs_points_isolates_failures_and_skips_finished(tiny_sweep, tmp_path, capsys):
    out, summary = tiny_sweep.out, tiny_sweep.summary  # baseline, cross, mono, broken: run once per session
    assert set(summary.attrs["failures"]) == {"broken"}
    assert "exceeds the 1148 groups" in summary.attrs["failures"]["broken"]
    assert str(out / "broken" / "02_train.ipynb") in summary.attrs["failures"]["broken"]
    for run in ("baseline", "cross", "mono"):
        metrics = json.loads((out / run / "metrics.json").read_text())
        assert metrics["params"]["run_name"] == run
        assert set(metrics["benchmarks"]["xquad-r"]["per_language"]) == {"de", "en", "th"}
        assert 0 < metrics["benchmarks"]["xquad-r"]["map"]["multi"] <= 1
        executed = nbformat.read(out / run / "02_train.ipynb", as_version=4)
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert json.loads((out / "cross" / "metrics.json").read_text())["training"]["batch_kinds"] == {"cross": 3}
    assert not (out / "broken" / "metrics.json").exists()
    for notebook in ("03_evaluation.ipynb", "04_bias_analysis.ipynb", "05_explore.ipynb"):
        assert (out / notebook).exists()
    assert (out / "figures" / "map_vs_ratio-xquad-r.png").stat().st_size > 10_000
    assert summary.loc["baseline", "status"].startswith("ok")
    assert "shared caches ready" not in tiny_sweep.printed  # one run at a time: each run fills its own caches

    history = json.loads((out / "sweep.json").read_text())["invocations"]
    assert len(history) == 1 and history[0]["status"]["baseline"]["status"].startswith("ok")
    assert history[0]["status"]["03_evaluation.ipynb"]["status"].startswith("ok")
    assert history[0]["launcher"].startswith("sequential")  # the default: one run at a time, as always
    baseline, cross = history[0]["status"]["baseline"], history[0]["status"]["cross"]
    assert baseline["ended"] <= cross["started"]  # one after the other
    assert [a["status"] for a in cross["attempts"]] == ["ok"] and cross["notebook"] == str(out / "cross" / "02_train.ipynb")
    assert json.loads((out / "cross" / "metrics.json").read_text())["environment"]["launcher"] == "sequential"

    # a second run reruns only what failed, is missing or cannot be read: truncate cross's metrics.json and
    # sweep.json as a full disk would; both are kept aside, cross is redone, the history begins again (on a copy
    # of the session's sweep, which other tests read as it is)
    shutil.copytree(out, tmp_path / "out")
    out, spec = tmp_path / "out", tmp_path / "tiny.yaml"
    spec.write_text(tiny_sweep.spec.read_text().replace(str(tiny_sweep.out), str(out)))
    metrics, record = out / "cross" / "metrics.json", out / "sweep.json"
    truncated_metrics, truncated_record = metrics.read_text()[:300], record.read_text()[:50]
    metrics.write_text(truncated_metrics)
    record.write_text(truncated_record)
    capsys.readouterr()
    summary = run_sweep(spec)
    printed = capsys.readouterr().out
    aside = sorted(out.glob("cross.damaged-*"))
    assert len(aside) == 1 and (aside[0] / "metrics.json").read_text() == truncated_metrics
    assert f"{metrics} cannot be read: not valid JSON" in printed and f"moved cross aside to {aside[0].name}" in printed
    backups = sorted(out.glob("sweep.json.damaged-*"))
    assert len(backups) == 1 and backups[0].read_text() == truncated_record
    assert f"warning: {record} cannot be read" in printed and f"kept it as {backups[0].name}" in printed
    history = json.loads(record.read_text())["invocations"]
    assert len(history) == 1  # a new history
    status = history[-1]["status"]
    assert status["baseline"]["status"].startswith("skipped") and status["cross"]["status"].startswith("ok")
    assert status["broken"]["status"] == "FAILED"
    assert json.loads(metrics.read_text())["training"]["batch_kinds"] == {"cross": 3}  # redone, whole
    assert status["mono"]["status"].startswith("skipped")
    assert sorted(summary.index) == ["baseline", "cross", "mono"]  # the folder set aside is not a run
    assert printed.index("1 FAILED:") < printed.index("status")  # failures come before the table


@pytest.mark.slow
def test_sweep_whose_only_trained_point_fails_runs_no_analysis_and_exits_non_zero(tmp_path, capsys):
    out = tmp_path / "sweep"
    spec = tmp_path / "failing.yaml"
    spec.write_text(SWEEP.format(out=out).split("runs:")[0] + "runs:\n  broken: {batch_size: 2000}\n")
    assert main([str(spec)]) == 1
    printed = capsys.readouterr().out
    for notebook in ("03_evaluation.ipynb", "04_bias_analysis.ipynb"):
        assert not (out / notebook).exists()
    assert "03_evaluation.ipynb, 04_bias_analysis.ipynb, 05_explore.ipynb not run: no run of this sweep has finished" in printed
    failures = printed[printed.index("1 FAILED:"):].splitlines()
    assert failures[1].startswith("  broken: ValueError: batch_size 2000 exceeds the 1148 groups")
    log = out / ".launch" / "broken" / "attempt-1.log"  # the run's own output, as the notebook printed it
    assert failures[1].endswith(f"-> {out / 'broken' / '02_train.ipynb'} (log: {log})")
    assert "exceeds the 1148 groups" in log.read_text()
    status = json.loads((out / "sweep.json").read_text())["invocations"][0]["status"]
    assert status["broken"]["status"] == "FAILED" and status["03_evaluation.ipynb"]["status"] == "not run"


def test_sweep_file_errors_come_before_any_work(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("runs:\n  a: {ratio_mono: 0.7, ratio_cros: 0.3}\n")
    assert main([str(spec)]) == 2
    assert "run 'a': unknown parameter 'ratio_cros'; did you mean 'ratio_cross'" in capsys.readouterr().err
    spec.write_text("runz: {}\n")
    with pytest.raises(ParameterError, match=r"unknown sweep keys \['runz'\]"):
        load_sweep(spec)


def test_shipped_sweep_files_resolve():
    """Every sweep file in params/ must pass validation (a dry run runs nothing)."""
    from pathlib import Path

    files = sorted((Path(__file__).parents[1] / "params").glob("*.yaml"))
    sweeps = [f for f in files if "runs:" in f.read_text()]
    assert sweeps, "params/ holds no sweep file"
    for path in sweeps:
        run_sweep(path, dry_run=True)


def test_seeds_repeat_trained_points_seed_major_and_run_the_baseline_once(tmp_path, capsys):
    spec = tmp_path / "seeded.yaml"
    spec.write_text(SWEEP.format(out=tmp_path / "out").replace("runs:", "seeds: [0, 7]\nruns:"))
    _, _, runs, _ = load_sweep(spec)
    assert list(runs) == ["baseline", "cross-s0", "mono-s0", "broken-s0", "cross-s7", "mono-s7", "broken-s7"]
    assert runs["baseline"]["point"] == "baseline" and "seed" not in runs["baseline"]
    assert {runs["cross-s7"][k] for k in ("seed",)} == {7} and runs["cross-s7"]["point"] == "cross"
    # --only takes a point (all its seeds) or one run
    run_sweep(spec, only=["cross"], dry_run=True)
    printed = capsys.readouterr().out
    assert "cross-s0" in printed and "cross-s7" in printed and "broken" not in printed.split("sweep 'tiny'")[0]
    for bad in ("[]", "[1, 1]", "[0.5]", "3"):
        spec.write_text(SWEEP.format(out=tmp_path / "out").replace("runs:", f"seeds: {bad}\nruns:"))
        with pytest.raises(ParameterError, match="seeds"):
            load_sweep(spec)


def test_export_writes_flat_parameter_files_that_resolve(tmp_path, capsys):
    from hybridlib.runs.config import load_yaml, resolve_params

    spec = tmp_path / "seeded.yaml"
    spec.write_text(SWEEP.format(out=tmp_path / "out").replace("runs:", "seeds: [0, 7]\nruns:"))
    assert main([str(spec), "--export", str(tmp_path / "points"), "--only", "cross,baseline"]) == 0
    files = sorted(p.name for p in (tmp_path / "points").glob("*.yaml"))
    assert files == ["baseline.yaml", "cross-s0.yaml", "cross-s7.yaml"]
    params = resolve_params(load_yaml(tmp_path / "points" / "cross-s7.yaml"), apply_env=False)
    assert (params["seed"], params["point"], params["ratio_cross"], params["steps"]) == (7, "cross", 1.0, 3)
    assert not (tmp_path / "out").exists()  # nothing ran
