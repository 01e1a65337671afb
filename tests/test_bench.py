"""Quick runs of the benchmark scripts: the structure and internal consistency of what they report, not their
timings (CI is shared). Every case is named in the report; a median lies in its spread [min, max] over the
requested rounds; a ratio is what it says it is, recomputed from the timings it comes from (the median of the
per-round quotients, or the quotient of totals); the baseline against itself is 1.0 (no difference); the
printed lines and table agree with the written report; the machine, device and versions are recorded."""

import gzip
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CASES = {"ours", "theirs", "floor"}
OPT_INS = {"compile", "bf16"}
EVAL_CASES = {"ours", "theirs", *OPT_INS, "floor"}
GPU_VARIANTS = {"padded+tokenize", "padded", "packed", "packed+compile"}
EVAL_SETTINGS = {"padded fp32", "padded bf16", "packed bf16"}
CPU_FLAGS = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"}  # what machine() looks for

pytestmark = pytest.mark.slow  # each script run takes from half a minute to a few minutes on a shared 2-core machine


def run(args) -> str:
    env = {k: v for k, v in os.environ.items() if k != "HYBRIDLIB_PARAMS_OVERRIDE"}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def assert_spread(s: dict, values=None, n: int | None = None) -> None:
    """``harness.spread``: median within [min, max] over n values (the values themselves, where given)."""
    assert set(s) == {"median", "min", "max", "n"}
    assert s["min"] <= s["median"] <= s["max"], s
    if n is not None:
        assert s["n"] == n, s
    if values is not None:
        assert s["n"] == len(values)
        assert close(s["median"], statistics.median(values)) and s["min"] == min(values) and s["max"] == max(values)


def assert_ratio(r: dict, slow: list[float], fast: list[float]) -> None:
    """``harness.ratio(slow, fast)``: the median and spread of the per-round quotients slow/fast."""
    assert len(slow) == len(fast) == r["n"]
    quotients = [s / f for s, f in zip(slow, fast)]
    assert close(r["median"], statistics.median(quotients))
    assert close(r["min"], min(quotients)) and close(r["max"], max(quotients))
    assert_spread(r)


def assert_machine(machine: dict) -> None:
    assert machine["python"] == platform.python_version() and machine["logical_cpus"] == os.cpu_count()
    assert machine["torch"] == version("torch") and machine["transformers"] == version("transformers")
    assert machine["sentence_transformers"] == version("sentence-transformers")
    assert machine["torch_threads"] >= 1 and len(machine["load_average_start"]) == 3
    assert machine["cpu"] and set(machine["cpu_flags"]) <= CPU_FLAGS
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return
    flags = set(next(line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")))
    assert set(machine["cpu_flags"]) == CPU_FLAGS & flags  # exactly the wanted ones this CPU has


# ------------------------------------------------------------------------------------------ bench/speed.py


@pytest.fixture(scope="module")
def speed(tmp_path_factory):
    """One ``--quick`` run (tiny model; 2 rounds of 1 warm-up + 2 steps, 2 chunks per role), made smaller still:
    batches of 8 pairs of at most 64 tokens, 10 XQuAD-R groups, 60 MLQA-R groups to draw from."""
    out = tmp_path_factory.mktemp("speed") / "speed.json"
    stdout = run(["bench/speed.py", "--quick", "--batch-size", "8", "--max-length", "64", "--max-groups", "10",
                  "--train-max-groups", "60", "--eval-batch-size", "32", "--out", str(out)])
    return json.loads(out.read_text()), stdout, out


def test_speed_report_records_the_run_and_the_machine(speed):
    report, stdout, out = speed
    args = report["args"]
    assert args["quick"] is True and args["skip"] == [] and args["out"] == str(out)
    # what --quick asks for, and the sizes given on the command line
    assert (args["rounds"], args["steps"], args["warmup"], args["eval_chunks"]) == (2, 2, 1, 2)
    assert (args["batch_size"], args["max_length"], args["max_groups"], args["train_max_groups"]) == (8, 64, 10, 60)
    assert_machine(report["machine"])
    assert report["failed_checks"] == [] and report["wall_s"] > 0
    assert f"report written to {out}" in stdout and "CHECK FAILED" not in stdout
    m = report["machine"]
    assert f"{m['logical_cpus']} logical CPUs, torch {m['torch']} with {m['torch_threads']} threads" in stdout


def test_speed_training_every_case_per_round_and_its_ratios(speed):
    report, stdout, _ = speed
    rounds, steps, warmup, batch = (report["args"][k] for k in ("rounds", "steps", "warmup", "batch_size"))
    training = report["training"]
    assert training["identical_input_ids"] is True
    assert set(training["step_s"]) == set(training["steps"]) == set(training["steps_per_process"]) == TRAIN_CASES
    for case in TRAIN_CASES:
        per_process = training["steps_per_process"][case]
        assert len(per_process) == rounds and all(len(times) == steps for times in per_process)  # one process a round
        assert all(t > 0 for times in per_process for t in times)
        # a round's timing is its process's median measured step
        assert training["step_s"][case] == pytest.approx([statistics.median(times) for times in per_process], rel=1e-12)
        assert_spread(training["steps"][case], training["step_s"][case], n=rounds)
    assert_ratio(training["ratio_ours_over_theirs"], training["step_s"]["theirs"], training["step_s"]["ours"])
    assert_ratio(training["ratio_ours_over_floor"], training["step_s"]["floor"], training["step_s"]["ours"])
    assert set(training["losses"]) == {"ours", "theirs"}
    for losses in training["losses"].values():  # the first process's, warm-up step included
        assert len(losses) == warmup + steps and all(math.isfinite(x) and x > 0 for x in losses)
    # printed as reported (2 decimals)
    r = training["ratio_ours_over_theirs"]
    assert f"training ratio ours/theirs = {r['median']:.2f} (rounds {r['min']:.2f}-{r['max']:.2f})" in stdout
    assert f"== training: {rounds} rounds" in stdout and f"training round {rounds}/{rounds}:" in stdout
    assert f"training round {rounds + 1}/" not in stdout
    (row,) = [line for line in stdout.splitlines() if line.startswith("training (pairs/s)")]
    pairs_per_s = {case: batch / training["steps"][case]["median"] for case in TRAIN_CASES}
    cells = row.split()
    for case in ("ours", "theirs", "floor"):
        assert f"{pairs_per_s[case]:.2f}" in cells
    assert f"{r['median']:.2f} [{r['min']:.2f}, {r['max']:.2f}]" in row
    assert f"{training['ratio_ours_over_floor']['median']:.2f}" in cells


def test_speed_evaluation_every_case_per_chunk_and_its_ratios(speed):
    from hybridlib.data.benchmarks import load_benchmark

    report, stdout, _ = speed
    args, evaluation = report["args"], report["evaluation"]
    benchmark = load_benchmark("xquad-r", max_groups=args["max_groups"])
    assert (evaluation["queries"], evaluation["candidates"]) == (len(benchmark.queries), len(benchmark.candidates))
    assert evaluation["identical_input_ids"] is True
    chunks = sum(len(range(0, n, -(-n // args["eval_chunks"]))) for n in (evaluation["queries"], evaluation["candidates"]))
    assert chunks == 2 * args["eval_chunks"]  # the rounds: every role in eval_chunks chunks
    times = evaluation["chunk_s"]
    assert set(times) == EVAL_CASES and all(len(t) == chunks and min(t) > 0 for t in times.values())
    assert set(evaluation["first_call_s"]) == set(evaluation["total_s"]) == EVAL_CASES - {"floor"}
    metrics = report["metrics_alone_s"]
    assert len(evaluation["metrics_s"]) == 3 and close(metrics, statistics.median(evaluation["metrics_s"]))
    totals = evaluation["total_s"]
    for name, total in totals.items():  # every path is charged the same scoring time
        assert close(total, sum(times[name]) + metrics)
    assert close(evaluation["floor_forward_s"], sum(times["floor"]))
    assert close(evaluation["ratio_ours_over_theirs"], totals["theirs"] / totals["ours"])
    assert close(evaluation["ours_over_floor"], sum(times["floor"]) / sum(times["ours"]))
    assert_ratio(evaluation["encode_ratio_per_chunk"], times["theirs"], times["ours"])
    assert set(evaluation["opt_ins"]) == OPT_INS
    pooled = evaluation["pooled_map"]
    assert set(pooled) == set(evaluation["max_abs_embedding_diff_vs_ours"]) == EVAL_CASES - {"floor"}
    assert all(0 < value <= 1 for value in pooled.values())
    for name, opt in evaluation["opt_ins"].items():
        assert close(opt["ratio_over_theirs"], totals["theirs"] / totals[name])
        assert close(opt["ratio_over_theirs_with_first_call"],
                     totals["theirs"] / (totals[name] + evaluation["first_call_s"][name]))
        assert_ratio(opt["ratio_over_ours_per_chunk"], times["ours"], times[name])
        assert close(opt["pooled_map_change"], pooled[name] - pooled["ours"])
    # the baseline against itself: no difference; the comparison's checks hold
    diff = evaluation["max_abs_embedding_diff_vs_ours"]
    assert diff["ours"] == 0.0 and evaluation["max_abs_embedding_diff"] == diff["theirs"] <= 1e-4
    assert diff["compile"] <= 1e-4 and diff["bf16"] < 0.05  # compile: the same numbers; bf16: close
    assert evaluation["pooled_map_abs_diff"] == abs(pooled["ours"] - pooled["theirs"]) <= 1e-4
    # printed as reported
    per_chunk = evaluation["encode_ratio_per_chunk"]
    assert (f"evaluation ratio ours/theirs = {evaluation['ratio_ours_over_theirs']:.2f} (encode per chunk "
            f"{per_chunk['median']:.2f}, {per_chunk['min']:.2f}-{per_chunk['max']:.2f})") in stdout
    assert f"metrics alone: evaluate_embeddings {metrics:.2f} s (median of 3)" in stdout
    assert f"evaluation round {chunks}/{chunks}:" in stdout
    lines = stdout.splitlines()
    (row,) = [line for line in lines if line.startswith("evaluation (s: encode + metrics)")]
    assert f"{totals['ours']:.1f}" in row and f"{evaluation['ratio_ours_over_theirs']:.2f} (chunks" in row
    for name, opt in evaluation["opt_ins"].items():
        (row,) = [line for line in lines if line.startswith(f"evaluation, {name} (opt-in)")]
        assert f"{opt['ratio_over_theirs']:.2f} ({opt['ratio_over_theirs_with_first_call']:.2f} with first call)" in row
    (row,) = [line for line in lines if line.startswith("metrics alone (s)")]
    assert f"{metrics:.2f}" in row


# ------------------------------------------------------------------------------------------ bench/gpu.py


@pytest.fixture(scope="module")
def gpu(tmp_path_factory):
    """``--prepare`` here, then the benchmark on the CPU with a tiny encoder: 1 warm-up + 2 steps of 4 pairs."""
    folder = tmp_path_factory.mktemp("gpu")
    inputs, out = folder / "inputs", folder / "gpu.json"
    prepared = run(["bench/gpu.py", "--prepare", str(inputs)])
    stdout = run(["bench/gpu.py", "--inputs", str(inputs), "--device", "cpu", "--size", "tiny", "--batch-size", "4",
                  "--warmup", "1", "--steps", "2", "--out", str(out)])
    return json.loads(out.read_text()), stdout, prepared, inputs


def test_gpu_prepare_writes_its_inputs(gpu):
    _, _, prepared, inputs = gpu
    assert f"wrote {inputs}: tokenizer/, pairs-mlqa-r, xquad-r.json.gz" in prepared
    assert (inputs / "tokenizer").is_dir() and (inputs / "pairs-mlqa-r.npz").stat().st_size > 0
    with gzip.open(inputs / "pairs-mlqa-r.json.gz", "rt", encoding="utf-8") as f:
        texts = json.load(f)
    assert set(texts) == {"query", "passage"} and len(texts["query"]) == len(texts["passage"]) > 0
    with gzip.open(inputs / "xquad-r.json.gz", "rt", encoding="utf-8") as f:
        assert set(json.load(f)) == {"queries", "candidates"}


def test_gpu_report_records_the_device_and_the_machine(gpu):
    import torch

    report, stdout, _, _ = gpu
    assert set(report) == {"machine", "args", "varlen_available", "train tiny mlqa-r", "evaluation tiny", "wall_s"}
    args = report["args"]  # as text
    assert (args["device"], args["size"], args["source"]) == ("cpu", "tiny", "mlqa-r")
    assert (args["batch_size"], args["warmup"], args["steps"]) == ("4", "1", "2")
    assert all(variant in args["variants"] for variant in GPU_VARIANTS) and args["skip_eval"] == "False"
    assert isinstance(report["varlen_available"], bool)
    assert_machine(report["machine"])
    assert ("gpu" in report["machine"]) == torch.cuda.is_available()
    train = report["train tiny mlqa-r"]
    assert "peak_memory_gib_all_variants" not in train  # CUDA only
    assert all(v["mfu_useful"] is None for v in train["variants"].values())  # no peak FLOPs known for a CPU
    assert report["wall_s"] > sum(report["evaluation tiny"][name]["seconds"] for name in EVAL_SETTINGS)
    for key in ("train tiny mlqa-r", "evaluation tiny"):  # each measurement printed as written
        (line,) = [x for x in stdout.splitlines() if x.startswith(key + " {")]
        assert json.loads(line[len(key) + 1:]) == report[key]


def test_gpu_training_every_variant_its_spread_and_its_ratio_to_the_baseline(gpu):
    report, _, _, _ = gpu
    train = report["train tiny mlqa-r"]
    steps = int(report["args"]["steps"])
    assert steps == 2  # the pairing check below is for two rounds
    assert train["batch_size"] == 4 and set(train["variants"]) == GPU_VARIANTS
    useful, padded = train["useful_tokens_per_step"], train["padded_tokens_per_step"]
    assert 0 < useful <= padded and close(train["padding_factor"], padded / useful) and train["padding_factor"] > 1
    assert train["useful_tflops_per_step"] > 0
    base = train["variants"]["padded+tokenize"]["step_s"]
    for name, variant in train["variants"].items():
        step_s = variant["step_s"]
        assert_spread(step_s, n=steps)
        assert step_s["min"] > 0 and close(variant["useful_tokens_per_s"], useful / step_s["median"])
        r = variant["speed_over_padded_tokenize"]
        assert_spread(r, n=steps)
        if name == "padded+tokenize":
            assert (r["median"], r["min"], r["max"]) == (1.0, 1.0, 1.0)  # the baseline over itself
            continue
        # two rounds: the quotients are (min/min, max/max) or (min/max, max/min) of the two spreads, the median their mean
        pairings = [sorted([base["min"] / step_s["min"], base["max"] / step_s["max"]]),
                    sorted([base["min"] / step_s["max"], base["max"] / step_s["min"]])]
        assert any(close(r["min"], lo) and close(r["max"], hi) for lo, hi in pairings), (r, base, step_s)
        assert close(r["median"], (r["min"] + r["max"]) / 2)


def test_gpu_evaluation_every_setting_and_its_difference_to_fp32(gpu):
    report, _, _, _ = gpu
    evaluation = report["evaluation tiny"]
    assert set(evaluation) == {"queries", "candidates", "batch_size", *EVAL_SETTINGS}
    assert evaluation["queries"] == evaluation["candidates"] == 300 and evaluation["batch_size"] == 256  # tiny: 300
    assert set(evaluation["padded fp32"]) == {"seconds"}  # the reference
    for name in EVAL_SETTINGS:
        assert evaluation[name]["seconds"] > 0
    for name in EVAL_SETTINGS - {"padded fp32"}:
        assert 0 <= evaluation[name]["max_abs_diff_vs_padded_fp32"] < 0.05  # bf16: close, not equal
