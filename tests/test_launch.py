"""Launchers with their real engines: the local pool (subprocesses over CPU or GPU slots, papermill, torchrun), the
run-folder lock, the shared-cache locks. The tiny sweep is a baseline, two trained points and one broken point on
real data with the tiny random model; CUDA_VISIBLE_DEVICES ids are fake on CPU (the runs then use the CPU)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hybridlib.training.checkpoint import checkpoint_step
from hybridlib.runs.local import LocalLauncher
from hybridlib.runs.runlock import RunFolderBusy, launch_dir, run_folder_holder
from hybridlib.runs.sweep import main, run_sweep

from conftest import TINY_SWEEP, write_sweep  # tests/ is on sys.path (rootdir conftest)

ROOT = Path(__file__).resolve().parents[1]
FINISHED = ("baseline", "cross", "mono")
# 40 steps with a checkpoint every 10: long enough to be killed mid-training (as tests/test_reliability.py)
RESUME_SWEEP = """
sweep: resume
output_dir: {out}
base: {{model: tiny-random, steps: 40, checkpoint_every: 10, batch_size: 8, learning_rate: 0.001, ratio_mono: 0.3,
        ratio_cross: 0.4, ratio_multi: 0.3, eval_languages: [en, de, zh], max_groups: 10, query_max_length: 24,
        passage_max_length: 32, save_model: false}}
runs:
{runs}
"""


def comparable(folder: Path, drop_names: bool = False) -> dict:
    """metrics.json without what may differ between two starts of the same run: timings, environment, location."""
    record = json.loads((folder / "metrics.json").read_text())
    for key in ("timings", "environment"):
        record.pop(key)
    record["params"].pop("output_dir")
    if drop_names:
        record.pop("run_name")
        for key in ("run_name", "point"):
            record["params"].pop(key)
    return record


def steps(folder: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "pairs_per_second")}
            for line in (folder / "steps.jsonl").read_text().splitlines()]


def last_invocation(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())["invocations"][-1]


def overlapping(windows: dict[str, tuple[str, str]]) -> list[tuple[str, str]]:
    """Pairs of runs whose [started, ended] windows overlap (ISO UTC times compare as text)."""
    names = sorted(windows)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
            if windows[a][0] < windows[b][1] and windows[b][0] < windows[a][1]]


@pytest.fixture(scope="module")
def threads() -> int:
    """CPU threads per run when two run at once (what LocalLauncher gives each of 2 slots)."""
    return LocalLauncher(workers=2).threads


@pytest.fixture(scope="module")
def sequential(tiny_sweep, threads) -> Path:
    """The tiny sweep run the default way (one at a time), each run with as many threads as a parallel one
    (conftest's session-wide ``tiny_sweep``)."""
    assert tiny_sweep.threads == threads and set(tiny_sweep.summary.attrs["failures"]) == {"broken"}
    return tiny_sweep.out


def check_broken_reported(out: Path, error: str) -> None:
    """The broken point's one line names its error, its notebook and its log; the log holds the traceback."""
    assert "exceeds the 1148 groups" in error
    assert f"-> {out / 'broken' / '02_train.ipynb'}" in error
    log = out / ".launch" / "broken" / "attempt-1.log"
    assert f"(log: {log})" in error
    assert "exceeds the 1148 groups" in log.read_text()


@pytest.mark.slow
def test_local_workers_run_at_once_skip_finished_and_match_a_sequential_sweep(tmp_path, sequential, threads, capsys):
    spec = write_sweep(tmp_path)
    out = tmp_path / "out"
    assert main([str(spec), "--launcher", "local", "--workers", "2"]) == 1  # the broken point failed
    printed = capsys.readouterr().out
    invocation = last_invocation(out)
    status = invocation["status"]
    assert invocation["launcher"].startswith("local: 2 runs at once on CPU slots")
    windows = {run: (status[run]["started"], status[run]["ended"]) for run in (*FINISHED, "broken")}
    assert overlapping(windows), windows  # two at a time
    assert {status[run]["where"].split(" (", 1)[1] for run in windows} == {"CPU slot 1 of 2)", "CPU slot 2 of 2)"}
    for run in FINISHED:
        assert status[run]["status"].startswith("ok") and status[run]["attempts"][0]["status"] == "ok"
        assert Path(status[run]["log"]).is_file() and status[run]["notebook"] == str(out / run / "02_train.ipynb")
        environment = json.loads((out / run / "metrics.json").read_text())["environment"]
        assert environment["launcher"] == "local" and environment["torch_threads"] == threads
        assert environment["host"] and environment["cuda_visible_devices"] is None
        assert comparable(out / run) == comparable(sequential / run), run
    assert status["broken"]["status"] == "FAILED"
    check_broken_reported(out, status["broken"]["error"])
    assert f"broken: FAILED: {status['broken']['error']}" in printed
    assert "runs: queued 0 · running 0 · finished 3 · failed 1" in printed
    # the caches are filled once per set-up: the baseline reads no training data, the three trained points the same
    assert "shared caches ready: 2 set-up(s) for 4 run(s)" in printed
    # each run's own output is in its log, not in the driver's
    assert "training pairs:" in Path(status["cross"]["log"]).read_text() and "training pairs:" not in printed
    for notebook in ("03_evaluation.ipynb", "04_bias_analysis.ipynb"):  # run once every run had ended
        assert (out / notebook).exists() and status[notebook]["status"] != "not run yet"  # (their content: test_sweep)

    summary = run_sweep(spec, launcher=LocalLauncher(workers=2), analysis=False)  # a rerun: only what failed
    rerun = last_invocation(out)["status"]
    assert all(rerun[run]["status"].startswith("skipped") for run in FINISHED), rerun
    assert rerun["broken"]["status"] == "FAILED" and set(summary.attrs["placements"]) == {"broken"}


@pytest.mark.slow
def test_local_gpu_slots_give_each_run_its_own_device(tmp_path, sequential):
    spec = write_sweep(tmp_path)
    out = tmp_path / "out"
    summary = run_sweep(spec, launcher=LocalLauncher(gpus=["0", "1"]), analysis=False)
    status = last_invocation(out)["status"]
    windows = {run: (status[run]["started"], status[run]["ended"]) for run in (*FINISHED, "broken")}
    assert overlapping(windows), windows
    used = set()
    for run in FINISHED:
        environment = json.loads((out / run / "metrics.json").read_text())["environment"]
        assert environment["cuda_visible_devices"] == status[run]["devices"] in ("0", "1")
        assert status[run]["where"].endswith(f"(CUDA_VISIBLE_DEVICES={status[run]['devices']})")
        used.add(status[run]["devices"])
        assert comparable(out / run) == comparable(sequential / run), run
    assert used == {"0", "1"}
    check_broken_reported(out, summary.attrs["failures"]["broken"])


@pytest.mark.slow
def test_killed_run_is_launched_again_and_resumes_to_the_same_metrics(tmp_path):
    """SIGKILL the process training one of two runs at once: --retries 1 launches it again and it resumes."""
    spec = write_sweep(tmp_path, RESUME_SWEEP, runs="  straight: {}\n  victim: {}")
    out = tmp_path / "out"
    killed = {}

    def kill_victim_after_its_first_checkpoint():
        deadline = time.time() + 300
        while (checkpoint_step(out / "victim" / "checkpoint") or 0) < 10 and time.time() < deadline:
            time.sleep(0.02)
        holder = (launch_dir(out / "victim") / "lock").read_text().split()  # "host H pid N since T": the kernel
        killed["pid"], killed["at"] = int(holder[holder.index("pid") + 1]), checkpoint_step(out / "victim" / "checkpoint")
        os.kill(killed["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_victim_after_its_first_checkpoint, daemon=True)
    killer.start()
    summary = run_sweep(spec, launcher=LocalLauncher(workers=2), retries=1, analysis=False)
    killer.join(timeout=10)
    assert 10 <= killed["at"] < 40, killed
    first, second = summary.attrs["placements"]["victim"]
    assert first.status == "died" and "DeadKernelError" in first.error and second.status == "ok", (first, second)
    assert f"resuming from the checkpoint at step {killed['at']} of 40" in Path(second.log).read_text()
    history = last_invocation(out)["status"]["victim"]
    assert [a["status"] for a in history["attempts"]] == ["died", "ok"] and history["attempt"] == 2
    assert comparable(out / "victim", drop_names=True) == comparable(out / "straight", drop_names=True)
    assert steps(out / "victim") == steps(out / "straight") and len(steps(out / "victim")) == 40
    assert not summary.attrs["failures"]


@pytest.mark.slow
@pytest.mark.torchrun
def test_runs_of_two_gpus_go_through_torchrun_each_on_its_own_port(tmp_path):
    """--gpus 0,1,2,3 --gpus-per-run 2: two runs at once, each torchrun --standalone of 2 processes (gloo on CPU)."""
    spec = write_sweep(tmp_path, TINY_SWEEP.split("runs:")[0] + "runs:\n  cross: {{ratio_mono: 0.0, ratio_cross: 1.0}}"
                       "\n  mono: {{ratio_mono: 1.0, ratio_cross: 0.0}}\n")
    out = tmp_path / "out"
    summary = run_sweep(spec, launcher=LocalLauncher(gpus=["0", "1", "2", "3"], gpus_per_run=2), analysis=False)
    assert not summary.attrs["failures"], summary.attrs["failures"]
    status = last_invocation(out)["status"]
    assert {status[run]["devices"] for run in ("cross", "mono")} == {"0,1", "2,3"}
    assert overlapping({run: (status[run]["started"], status[run]["ended"]) for run in ("cross", "mono")})
    for run in ("cross", "mono"):
        log = Path(status[run]["log"]).read_text()
        assert "torch.distributed.run --standalone --nproc_per_node=2" in log
        environment = json.loads((out / run / "metrics.json").read_text())["environment"]
        assert environment["cuda_visible_devices"] == status[run]["devices"]
        ranks = sorted((launch_dir(out / run) / "ranks").glob("rank-*.json"))
        assert [json.loads(r.read_text())["status"] for r in ranks] == ["ok", "ok"]


def test_a_run_folder_held_by_another_process_is_left_alone(tmp_path):
    from hybridlib.runs.config import resolve_params
    from hybridlib.runs.experiment import prepare_run_folder

    spec = write_sweep(tmp_path)
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from hybridlib.runs.runlock import lock_run_folder; "
                               f"lock_run_folder({str(out / 'cross')!r}); print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert f"pid {holder.pid} " in run_folder_holder(out / "cross")
        summary = run_sweep(spec, only=["cross"])
        assert summary.attrs["pending"] and summary.attrs["pending"]["cross"].startswith("running elsewhere (host ")
        assert not (out / "cross").exists()  # left alone: nothing started, nothing set aside
        assert not (out / "03_evaluation.ipynb").exists()  # whoever ends the last run runs the analysis
        params = resolve_params({"model": "tiny-random", "output_dir": str(out), "run_name": "cross"}, apply_env=False)
        with pytest.raises(RunFolderBusy, match=f"is being run by another process .*pid {holder.pid} "):
            prepare_run_folder(params)
    finally:
        holder.kill()
        holder.wait()
    assert run_folder_holder(out / "cross") is None  # the kernel drops the lock of a dead process


def test_concurrent_first_users_fill_each_shared_cache_once(tmp_path, monkeypatch, data_dir, mlqa_pairs):
    """Benchmark downloads, mMARCO pair tables and token ids: threads (separate flock holders, like processes)
    asking for the same missing entry at once fill it once; the others wait, then read it."""
    import datasets

    from hybridlib.data import benchmarks as data, pair_sources
    from hybridlib.models.bi_encoder import tiny_model
    from hybridlib.data.tokens import PairTokens

    monkeypatch.delenv("HYBRIDLIB_DATA_DIR", raising=False)
    monkeypatch.setenv("HYBRIDLIB_CACHE_DIR", str(tmp_path / "cache"))
    calls = {"download": 0, "stream": 0, "tokenize": 0}
    real_download = data.download_file

    def slow_download(url, dest, sha256, timeout=60.0):
        calls["download"] += 1
        time.sleep(0.5)  # long enough for the other threads to arrive while it downloads
        return real_download(url, dest, sha256, timeout)

    def slow_stream(codes, **kwargs):
        calls["stream"] += 1
        time.sleep(0.5)
        return datasets.Dataset.from_dict({"group": ["q1"], "lang": ["en"], "query": ["a"], "passage": ["b"]})

    monkeypatch.setattr(data, "_RAW", f"file://{data_dir}/{{name}}/{{lang}}.json#{{commit}}")
    monkeypatch.setattr(data, "download_file", slow_download)
    monkeypatch.setattr(pair_sources, "mmarco_pairs", slow_stream)
    model = tiny_model()
    real_token_ids = model.token_ids

    def counted_token_ids(texts, role):
        calls["tokenize"] += 1
        time.sleep(0.25)
        return real_token_ids(texts, role)

    model.token_ids = counted_token_ids
    pairs = mlqa_pairs.select(range(50))
    jobs = [lambda: data.resolve_files("xquad-r", ["de"]),
            lambda: pair_sources.cached_mmarco_pairs(["en"], 1, tmp_path / "cache"),
            lambda: PairTokens.build(pairs, model)]
    results, errors = [], []

    def call(job):
        try:
            results.append(job())
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=call, args=(job,)) for job in jobs for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert calls == {"download": 1, "stream": 1, "tokenize": 2}  # tokenize: once per role (query, passage)
    assert len(results) == 9


def test_launcher_options_are_checked_before_anything_runs(tmp_path, capsys, monkeypatch):
    spec = write_sweep(tmp_path)
    for argv, message in (
        (["--workers", "2"], "--workers need --launcher local"),
        (["--launcher", "local", "--workers", "2", "--gpus", "0,1"], "--workers and --gpus exclude each other"),
        (["--launcher", "local", "--gpus", "0,1,2", "--gpus-per-run", "2"], "must split into whole runs"),
        (["--launcher", "local", "--no-wait"], "--no-wait need --launcher slurm"),
        (["--launcher", "slurm", "--slurm-arg", "account"], "write it as KEY=VALUE"),
        (["--retries", "-1"], "--retries -1: must be 0 or more"),
    ):
        assert main([str(spec), *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if the optional extra were not installed
    assert main([str(spec), "--launcher", "slurm"]) == 2
    assert 'needs submitit, which is not installed: pip install -e ".[slurm]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
