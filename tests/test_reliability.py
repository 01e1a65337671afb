"""Reliability: interrupted runs resume exactly, runs are deterministic, failures are recorded."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hybridlib.data import benchmarks as data
from hybridlib.data.pinned import BENCHMARKS
from hybridlib.runs import experiment
from hybridlib.training.checkpoint import checkpoint_step
from hybridlib.runs.config import resolve_params

TINY_RUN = {
    "model": "tiny-random", "steps": 40, "checkpoint_every": 10, "batch_size": 8, "learning_rate": 1e-3,
    "ratio_mono": 0.3, "ratio_cross": 0.4, "ratio_multi": 0.3, 
    "eval_languages": ["en", "de", "zh"], "max_groups": 10, "query_max_length": 24, "passage_max_length": 32,
    "save_model": False,
}
TIMING_FIELDS = {"seconds", "pairs_per_second"}


def comparable_metrics(folder: Path) -> dict:
    """metrics.json without what may differ between two runs of the same thing: timings and location."""
    record = json.loads((folder / "metrics.json").read_text())
    record.pop("timings")
    record.pop("run_name")
    for key in ("run_name", "output_dir"):
        record["params"].pop(key)
    return record


def comparable_log(folder: Path) -> list[dict]:
    lines = (folder / "steps.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS} for line in lines]


def start_run(params_file: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hybridlib.experiment", str(params_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)


def write_params(tmp_path: Path, run_name: str) -> Path:
    path = tmp_path / f"{run_name}.yaml"
    path.write_text(yaml.safe_dump({**TINY_RUN, "output_dir": str(tmp_path / "runs"), "run_name": run_name}))
    return path


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_log_and_metrics(tmp_path):
    straight = start_run(write_params(tmp_path, "straight"))
    output, _ = straight.communicate(timeout=600)
    assert straight.returncode == 0, output

    folder = tmp_path / "runs" / "killed"
    params_file = write_params(tmp_path, "killed")
    victim = start_run(params_file)
    deadline = time.time() + 300
    while (checkpoint_step(folder / "checkpoint") or 0) < 10:  # wait for the first checkpoint ...
        assert victim.poll() is None, victim.stdout.read()
        assert time.time() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.02)
    os.killpg(victim.pid, signal.SIGKILL)  # ... then kill the whole process group mid-training
    victim.wait()
    assert not (folder / "metrics.json").exists(), "the run finished before it was killed: test proves nothing"
    killed_at = checkpoint_step(folder / "checkpoint")
    assert 10 <= killed_at < 40

    resumed = start_run(params_file)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    assert f"resuming from the checkpoint at step {killed_at} of 40" in output
    assert comparable_log(folder) == comparable_log(tmp_path / "runs" / "straight")
    assert len(comparable_log(folder)) == 40
    assert comparable_metrics(folder) == comparable_metrics(tmp_path / "runs" / "straight")
    assert not (folder / "checkpoint").exists()  # dropped once the run is complete


def test_same_parameters_twice_give_identical_metrics(tmp_path):
    paths = []
    for name in ("first", "second"):
        params = resolve_params({**TINY_RUN, "steps": 6, "output_dir": str(tmp_path), "run_name": name},
                                apply_env=False)
        paths.append(experiment.run_experiment(params, progress=False).parent)
    first, second = (comparable_metrics(p) for p in paths)
    assert first == second
    assert first["training"]["steps"] == 6 and first["benchmarks"]["xquad-r"]["map"]["multi"] > 0
    assert comparable_log(paths[0]) == comparable_log(paths[1])


def test_non_finite_loss_stops_with_step_keeps_checkpoint_and_records_failure(tmp_path, monkeypatch):
    from hybridlib.training import loss as loss_module

    real_forward = loss_module.InfoNCELoss.forward
    calls = {"n": 0}

    def forward_nan_at_step_7(self, q, p):
        calls["n"] += 1
        out = real_forward(self, q, p)
        if calls["n"] == 7:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(loss_module.InfoNCELoss, "forward", forward_nan_at_step_7)
    params = resolve_params({**TINY_RUN, "steps": 12, "checkpoint_every": 5, "output_dir": str(tmp_path),
                             "run_name": "nan"}, apply_env=False)
    with pytest.raises(FloatingPointError, match="at step 7 of 12"):
        experiment.run_experiment(params, progress=False)
    folder = tmp_path / "nan"
    failure = json.loads((folder / "failure.json").read_text())
    assert "at step 7" in failure["error"] and failure["last_checkpoint_step"] == 5
    assert checkpoint_step(folder / "checkpoint") == 5
    assert len(comparable_log(folder)) == 6 and not (folder / "metrics.json").exists()


def test_damaged_cached_file_is_downloaded_again(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("HYBRIDLIB_DATA_DIR", raising=False)
    monkeypatch.setenv("HYBRIDLIB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(data, "_RAW", f"file://{data_dir}/{{name}}/{{lang}}.json#{{commit}}")
    cached = tmp_path / "data" / "xquad-r" / "de.json"
    cached.parent.mkdir(parents=True)
    cached.write_bytes((data_dir / "xquad-r" / "de.json").read_bytes()[:5000])  # a truncated earlier download
    bench = data.load_benchmark("xquad-r", languages=["de"])
    assert len(bench.queries) == 1190
    assert data.sha256_of(cached) == BENCHMARKS["xquad-r"]["sha256"]["de"]


def test_invalid_json_is_a_clear_error(tmp_path):
    broken = tmp_path / "en.json"
    broken.write_text('{"data": [ {"paragraphs": ')
    with pytest.raises(ValueError, match="is not a valid LAReQA/SQuAD JSON file"):
        data._read_squad(broken)
