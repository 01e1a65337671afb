"""Bad inputs on real files: malformed YAML, damaged run records, checkpoints that are not plain data.

Each case must give one clear message (or a warning) naming the file, and must never start work on, nor pass
off as finished, anything it cannot read. The sweep-level cases that run notebooks are in test_sweep.py.
"""

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hybridlib import analysis
from hybridlib.runs import experiment, sweep
from hybridlib.training.checkpoint import STATE_FILE, CheckpointError
from hybridlib.runs.config import ParameterError, load_yaml, resolve_params
from hybridlib.records import record_damage

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "outputs" / "demo"  # committed, finished runs: real records to damage copies of
TINY = {"model": "tiny-random", "steps": 0, "max_groups": 10, "eval_languages": ["en", "de"], "save_model": False}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# --- YAML -------------------------------------------------------------------------------------------------

def test_sweep_file_with_a_syntax_error_is_one_line_naming_file_line_and_column(tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text("sweep: broken\nruns:\n  a: {steps: 0\n  b: {steps: 0}\n")  # the flow mapping is never closed
    done = subprocess.run([sys.executable, "-m", "hybridlib.sweep", str(spec)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"error: {spec}:4:4: ")
    assert "while parsing a flow mapping at line 3" in done.stderr
    assert not (ROOT / "outputs" / "broken").exists()  # nothing started


def test_sweep_file_naming_a_run_twice_is_an_error_naming_it_and_both_lines(tmp_path, capsys):
    spec = tmp_path / "twice.yaml"
    spec.write_text(f"output_dir: {tmp_path / 'out'}\nruns:\n  a: {{steps: 0}}\n  b: {{steps: 0}}\n"
                    "  a: {steps: 0, max_groups: 5}\n")
    assert sweep.main([str(spec)]) == 2
    assert one_line_error(capsys) == (f"error: {spec}:5:3: duplicate key 'a' (lines 3 and 5); keep one of them")
    assert not (tmp_path / "out").exists()


def test_duplicate_keys_at_any_level_and_in_every_yaml_the_project_reads(tmp_path, capsys, monkeypatch):
    flat = tmp_path / "run.yaml"
    flat.write_text("model: tiny-random\nsteps: 3\nbatch_size: 8\nsteps: 5\n")
    assert experiment.main([str(flat)]) == 2  # python -m hybridlib.experiment FILE
    assert one_line_error(capsys) == f"error: {flat}:4:1: duplicate key 'steps' (lines 2 and 4); keep one of them"

    nested = tmp_path / "nested.yaml"  # inside base:, in one flow mapping on one line
    nested.write_text("runs:\n  a: {}\nbase: {steps: 1, batch_size: 8, steps: 2}\n")
    with pytest.raises(ParameterError, match=r"nested.yaml:3:33: duplicate key 'steps' \(twice in line 3\)"):
        sweep.load_sweep(nested)

    (tmp_path / "shared.yaml").write_text("steps: 3\nlearning_rate: [1e-4\n")  # the extends: chain
    extends = tmp_path / "extends.yaml"
    extends.write_text("extends: shared.yaml\nruns:\n  a: {}\n")
    assert sweep.main([str(extends), "--dry-run"]) == 2
    assert one_line_error(capsys).startswith(f"error: {tmp_path / 'shared.yaml'}:3:1: ")

    override = tmp_path / "override.yaml"  # $HYBRIDLIB_PARAMS_OVERRIDE, read by every run
    override.write_text("steps: 1\nsteps: 2\n")
    monkeypatch.setenv("HYBRIDLIB_PARAMS_OVERRIDE", str(override))
    with pytest.raises(ParameterError, match=r"override.yaml:2:1: duplicate key 'steps' \(lines 1 and 2\)"):
        resolve_params({})


def test_strict_yaml_still_reads_what_the_project_writes(tmp_path):
    # merge keys may override (that is what they are for); YAML 1.1 numbers stay the config's business
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {steps: 1, batch_size: 8}\nruns:\n  a: {<<: *b, steps: 2}\nlr: 5e-5\n")
    assert load_yaml(path) == {"base": {"steps": 1, "batch_size": 8}, "runs": {"a": {"steps": 2, "batch_size": 8}},
                               "lr": "5e-5"}
    for shipped in sorted((ROOT / "params").glob("*.yaml")):
        assert isinstance(load_yaml(shipped), dict)
    path.write_bytes(b"steps: \xff\xfe\x00\n")
    with pytest.raises(ParameterError, match=r"ok.yaml: not a readable YAML file"):
        load_yaml(path)


# --- damaged run records ----------------------------------------------------------------------------------

def copy_demo_run(run: str, sweep_dir: Path) -> Path:
    target = sweep_dir / run
    target.mkdir(parents=True)
    for name in ("metrics.json", "params.json"):
        shutil.copy(DEMO / run / name, target / name)
    return target


def test_analysis_skips_an_unreadable_run_with_a_warning_naming_it(tmp_path):
    good, bad = copy_demo_run("baseline", tmp_path), copy_demo_run("mono-s0", tmp_path)
    text = (bad / "metrics.json").read_text()
    (bad / "metrics.json").write_text(text[: len(text) // 2])  # truncated by a full disk
    set_aside = copy_demo_run("cross-s0", tmp_path).rename(tmp_path / "cross-s0.damaged-20250101T000000Z")
    with pytest.warns(UserWarning, match=rf"skipped run mono-s0: {bad / 'metrics.json'} cannot be read: not valid JSON"):
        runs = analysis.load_runs(tmp_path)
    assert [run["path"] for run in runs] == [good]  # neither the damaged run nor the folder set aside
    assert set_aside.exists()


def test_dry_run_reports_a_damaged_run_and_moves_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    folder = copy_demo_run("baseline", out)
    (folder / "metrics.json").write_text('{"run_name": "baseline", "params": {')
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"output_dir: {out}\nruns:\n  baseline: {{steps: 0}}\n")
    with pytest.warns(UserWarning, match="skipped run baseline"):  # the summary reads the sweep back
        sweep.run_sweep(spec, dry_run=True)
    printed = capsys.readouterr().out
    assert f"{folder / 'metrics.json'} cannot be read: not valid JSON" in printed
    assert "would be moved aside; the run is redone" in printed
    assert sorted(p.name for p in out.iterdir()) == ["baseline"]


def test_run_folder_with_unreadable_params_is_set_aside_and_the_run_starts_over(tmp_path, capsys):
    params = resolve_params({**TINY, "output_dir": str(tmp_path), "run_name": "r"}, apply_env=False)
    folder = experiment.prepare_run_folder(params)
    (folder / "params.json").write_bytes(b"\x00" * 40)  # a sync tool's placeholder
    (folder / "steps.jsonl").write_text("{}\n")
    experiment.prepare_run_folder(params)
    warning = capsys.readouterr().err
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("r.damaged-")]
    assert len(aside) == 1 and (aside[0] / "steps.jsonl").exists()  # kept, whole
    assert f"{folder / 'params.json'} cannot be read" in warning and str(aside[0]) in warning
    assert json.loads((folder / "params.json").read_text()) == params and record_damage(folder) is None
    assert not (folder / "steps.jsonl").exists()  # a fresh folder


# --- checkpoints ------------------------------------------------------------------------------------------

class CreatesAFile:
    """Unpickling this creates a file: what a planted checkpoint could do with any other call."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A real checkpoint after 2 of 4 steps of the tiny model on MLQA-R pairs, and a way to resume it."""
    from hybridlib.data.benchmarks import load_benchmark, pairs_from_benchmark
    from hybridlib.models.bi_encoder import tiny_model
    from hybridlib.data.sampler import HybridBatchSampler
    from hybridlib.training.loop import train

    pairs = pairs_from_benchmark(load_benchmark("mlqa-r", max_groups=100))
    model = tiny_model()
    folder = tmp_path_factory.mktemp("ckpt") / "checkpoint"

    def resume(steps):
        sampler = HybridBatchSampler(pairs, batch_size=8, ratios={"mono": 0.0, "cross": 0.5, "multi": 0.5}, seed=0)
        return train(model, sampler, steps=steps, lr=1e-3, progress=False, checkpoint_dir=folder,
                     checkpoint_every=2)

    resume(2)
    return folder, resume


def test_checkpoint_is_tensors_and_plain_data(checkpointed):
    folder, _ = checkpointed
    state = torch.load(folder / STATE_FILE, weights_only=True)  # no pickled object anywhere in it
    assert state["step"] == 2 and isinstance(state["random"]["python"]["internal"], list)
    assert isinstance(state["random"]["numpy"]["key"], list)


@pytest.mark.parametrize("form", ["pickle", "torch.save"])
def test_planted_checkpoint_is_refused_naming_it_and_runs_nothing(checkpointed, tmp_path, form):
    folder, resume = checkpointed
    state = folder / STATE_FILE
    kept = state.read_bytes()
    marker = tmp_path / "created-by-the-checkpoint"
    planted = {"step": 2, "parameters": CreatesAFile(marker)}
    try:
        if form == "pickle":
            state.write_bytes(pickle.dumps(planted))
        else:
            torch.save(planted, state)
        with pytest.raises(CheckpointError) as refused:
            resume(4)
    finally:
        state.write_bytes(kept)
    assert not marker.exists()
    message = str(refused.value)
    assert message.startswith(f"checkpoint {state} refused: it holds more than tensors and plain data")
    assert f"delete {folder} to start the run over" in message and "weights_only=False" not in message


def test_damaged_checkpoint_description_is_refused_naming_it(checkpointed):
    folder, resume = checkpointed
    info = folder / "checkpoint.json"
    kept = info.read_text()
    try:
        info.write_text(kept[:10])
        with pytest.raises(CheckpointError, match=rf"checkpoint {info} refused: not valid JSON"):
            resume(4)
    finally:
        info.write_text(kept)
