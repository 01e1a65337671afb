"""Smoke runs of the benchmark scripts (their timings are not tested: bench/ prints ratios, CI is shared)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_speed_benchmark_quick_prints_every_ratio(tmp_path):
    out = run(["bench/speed.py", "--quick", "--out", str(tmp_path / "speed.json")], tmp_path)
    for line in ("training ratio ours/theirs =", "evaluation ratio ours/theirs =", "metrics alone:"):
        assert line in out, out[-2000:]
    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["training"]["identical_input_ids"] is True and report["evaluation"]["identical_input_ids"] is True
    assert report["training"]["ratio_ours_over_theirs"]["median"] > 0
    assert all(len(times) == 2 for times in report["training"]["step_s"].values())  # 2 rounds (processes) each
    assert set(report["training"]["step_s"]) == {"ours", "theirs", "floor"}
    assert report["evaluation"]["pooled_map_abs_diff"] <= 1e-4 and report["failed_checks"] == []


def test_gpu_benchmark_runs_on_cpu_with_a_tiny_model(tmp_path):
    inputs = tmp_path / "inputs"
    run(["bench/gpu.py", "--prepare", str(inputs)], tmp_path)
    out_file = tmp_path / "gpu.json"
    run(["bench/gpu.py", "--inputs", str(inputs), "--device", "cpu", "--size", "tiny", "--batch-size", "4",
         "--warmup", "1", "--steps", "2", "--out", str(out_file)], tmp_path)
    report = json.loads(out_file.read_text())
    result = report["train tiny mlqa-r"]
    assert set(result["variants"]) == {"padded+tokenize", "padded", "packed", "packed+compile"}
    assert result["padding_factor"] > 1 and result["useful_tokens_per_step"] > 0
    for variant in result["variants"].values():
        assert variant["step_s"]["n"] == 2 and variant["useful_tokens_per_s"] > 0
    evaluation = report["evaluation tiny"]
    assert evaluation["packed bf16"]["max_abs_diff_vs_padded_fp32"] < 0.05  # bf16: close, not equal
