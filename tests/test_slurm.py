"""The Slurm launcher against a real Slurm: a one-node cluster on this machine with two fake GPUs (.ci/slurm-up.sh;
gres device files and Flags=nvidia_gpu_env, so Slurm sets CUDA_VISIBLE_DEVICES per job), jobs through submitit.

The cluster is used when it is up, else started here (root and apt-get: installed first) and stopped at the end.
Without root or apt-get these tests skip, saying why (`pytest -rs`)."""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hybridlib.training.checkpoint import checkpoint_step
from hybridlib.runs.slurm import SlurmLauncher
from hybridlib.runs.sweep import main, run_sweep

from test_launch import FINISHED, RESUME_SWEEP, comparable, last_invocation, overlapping, steps, write_sweep

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
SLURM_DIR = Path(os.environ.get("HYBRIDLIB_SLURM_DIR", "/tmp/hybridlib-slurm"))
SLURM = ["--launcher", "slurm", "--gpus-per-run", "1", "--cpus-per-run", "1", "--time-min", "10"]


def _node_up(env: dict) -> bool:
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20, env=env)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and any(s.strip().rstrip("*") in ("idle", "mix", "alloc") for s in done.stdout.split())


@pytest.fixture(scope="session")
def slurm_cluster():
    pytest.importorskip("submitit", reason="the Slurm launcher needs submitit: pip install -e '.[slurm]'")
    env = {**os.environ, "SLURM_CONF": str(SLURM_DIR / "etc" / "slurm.conf")}
    started = False
    if not ((SLURM_DIR / "etc" / "slurm.conf").exists() and _node_up(env)):
        done = subprocess.run(["bash", str(ROOT / ".ci" / "slurm-up.sh")], capture_output=True, text=True, env=env,
                              timeout=900)
        if done.returncode == 3:
            pytest.skip(f"no Slurm cluster here: {done.stdout.strip().splitlines()[-1]}")
        assert done.returncode == 0, done.stdout + done.stderr
        started = True
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", env["SLURM_CONF"])
        patch.setenv("HYBRIDLIB_SLURM_POLL_S", "1")
        yield
    if started:
        subprocess.run(["bash", str(ROOT / ".ci" / "slurm-down.sh")], env=env, timeout=120)


def test_sweep_on_slurm_uses_both_gpus_reports_the_broken_point_and_collects_after_no_wait(tmp_path, slurm_cluster,
                                                                                          capsys):
    spec = write_sweep(tmp_path)
    out = tmp_path / "out"
    assert main([str(spec), *SLURM, "--no-wait"]) == 0  # submitted, nothing failed yet
    printed = capsys.readouterr().out
    submitted = last_invocation(out)["status"]
    assert all(submitted[run]["status"].startswith("submitted (Slurm job ") for run in (*FINISHED, "broken"))
    assert "not run yet: 4 run(s) still queued or running" in printed and not (out / "03_evaluation.ipynb").exists()
    jobs = {run: submitted[run]["slurm_job"] for run in submitted if run in (*FINISHED, "broken")}
    assert len({job.split("_")[0] for job in jobs.values()}) == 1  # one job array

    assert main([str(spec), *SLURM]) == 1  # the same command: collects every job, then 03/04; broken failed
    printed = capsys.readouterr().out
    status = last_invocation(out)["status"]
    assert "of an earlier invocation: collecting it" in printed
    devices = set()
    for run in FINISHED:
        assert status[run]["status"].startswith("ok") and status[run]["slurm_job"] == jobs[run]
        environment = json.loads((out / run / "metrics.json").read_text())["environment"]
        assert environment["launcher"] == "slurm" and environment["slurm_array_job_id"] == jobs[run].split("_")[0]
        assert environment["slurm_array_task_id"] == jobs[run].split("_")[1] and environment["slurm_job_id"]
        assert environment["cuda_visible_devices"] == status[run]["devices"]
        devices.add(environment["cuda_visible_devices"])
    assert devices == {"0", "1"}  # both fake GPUs, one per job
    assert overlapping({run: (status[run]["started"], status[run]["ended"]) for run in FINISHED})
    broken = status["broken"]
    assert broken["status"] == "FAILED" and "exceeds the 1148 groups" in broken["error"]
    assert f"-> {out / 'broken' / '02_train.ipynb'}" in broken["error"]
    log, stderr = Path(broken["log"]), Path(broken["stderr"])  # Slurm's log files of that job
    assert log.parent == out / ".launch" / "slurm" and log.name == f"{jobs['broken']}_0_log.out"
    assert f"(log: {log}; stderr: {stderr})" in broken["error"] and log.is_file() and stderr.is_file()
    assert "exceeds the 1148 groups" in log.read_text() + stderr.read_text()
    for notebook in ("03_evaluation.ipynb", "04_bias_analysis.ipynb"):
        assert (out / notebook).exists() and status[notebook]["status"] != "not run yet"  # (their content: test_sweep)


def test_cancelled_job_is_resubmitted_and_preempted_job_requeued_both_resume_from_their_checkpoints(tmp_path,
                                                                                                    slurm_cluster):
    """scancel one job mid-training: the driver resubmits it (--retries 1). Send another the signal Slurm sends at
    the time limit (USR2): submitit requeues it. Both resume from their checkpoints to an uninterrupted run's
    metrics.json."""
    spec = write_sweep(tmp_path, RESUME_SWEEP, runs="  straight: {}\n  cancelled: {}\n  preempted: {}")
    out = tmp_path / "out"
    hit = {}

    def after_first_checkpoint(run: str, command: list[str]):
        deadline = time.time() + 600
        while (checkpoint_step(out / run / "checkpoint") or 0) < 10:
            assert time.time() < deadline
            time.sleep(0.05)
        job = json.loads((out / ".launch" / run / "slurm.json").read_text())["job_id"]
        hit[run] = (job, checkpoint_step(out / run / "checkpoint"))
        subprocess.run([*command, job], check=True)

    hitters = [threading.Thread(target=after_first_checkpoint, args=args, daemon=True)
               for args in (("cancelled", ["scancel"]), ("preempted", ["scancel", "--signal=USR2"]))]
    for thread in hitters:
        thread.start()
    launcher = SlurmLauncher(out / ".launch" / "slurm", gpus_per_run=1, cpus_per_run=1, time_min=10)
    summary = run_sweep(spec, launcher=launcher, retries=1, analysis=False)
    for thread in hitters:
        thread.join(timeout=30)
    assert set(hit) == {"cancelled", "preempted"} and not summary.attrs["failures"], summary.attrs["failures"]

    first, second = summary.attrs["placements"]["cancelled"]
    assert (first.status, first.exit, first.slurm_job) == ("died", "CANCELLED", hit["cancelled"][0]), first
    assert second.status == "ok" and second.slurm_job != first.slurm_job
    assert f"resuming from the checkpoint at step {hit['cancelled'][1]} of 40" in Path(second.log).read_text()

    (preempted,) = summary.attrs["placements"]["preempted"]  # requeued by Slurm: the same job, one attempt
    assert preempted.status == "ok" and preempted.slurm_job == hit["preempted"][0]
    assert "Caught signal SIGUSR2" in Path(preempted.stderr).read_text()
    assert f"resuming from the checkpoint at step {hit['preempted'][1]} of 40" in Path(preempted.log).read_text()

    for run in ("cancelled", "preempted"):
        assert comparable(out / run, drop_names=True) == comparable(out / "straight", drop_names=True), run
        assert steps(out / run) == steps(out / "straight")
    history = last_invocation(out)["status"]
    assert [a["status"] for a in history["cancelled"]["attempts"]] == ["died", "ok"]
