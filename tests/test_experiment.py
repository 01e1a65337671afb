"""One way to run a run: the training notebook under papermill and `python -m hybridlib.experiment` make the
same calls (experiment.Run), so their run folders hold the same files with the same content, timings aside."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": "tiny-random", "steps": 3, "batch_size": 8, "checkpoint_every": 2, "ratio_mono": 0.5,
        "ratio_cross": 0.5, "eval_languages": ["en", "de", "zh"], "max_groups": 10, "query_max_length": 24,
        "passage_max_length": 32, "save_model": True, "run_name": "run"}
TIMING_FIELDS = {"seconds", "pairs_per_second"}


def run_with_papermill(output_dir: Path, notebook: Path) -> Path:
    import papermill

    papermill.execute_notebook(str(ROOT / "notebooks" / "02_train.ipynb"), str(notebook),
                               parameters={**TINY, "output_dir": str(output_dir)}, cwd=str(ROOT),
                               kernel_name="python3", progress_bar=False)
    return output_dir / "run"


def run_as_module(output_dir: Path, params_file: Path) -> Path:
    params_file.write_text(yaml.safe_dump({**TINY, "output_dir": str(output_dir)}))
    done = subprocess.run([sys.executable, "-m", "hybridlib.experiment", str(params_file)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(output_dir / "run" / "metrics.json")
    return output_dir / "run"


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def comparable(folder: Path, name: str):
    path = folder / name
    if name == "params.json":
        return {k: v for k, v in json.loads(path.read_text()).items() if k != "output_dir"}
    if name == "metrics.json":
        record = json.loads(path.read_text())
        record.pop("timings")
        record["params"].pop("output_dir")
        return record
    if name == "steps.jsonl":
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS}
                for line in path.read_text().splitlines()]
    if name.endswith(".png"):
        from matplotlib.image import imread

        return imread(path).tolist()
    if name.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return {k: v.tolist() for k, v in load_file(path).items()}
    return path.read_bytes()


@pytest.mark.slow
def test_papermill_and_the_module_write_the_same_run_folder(tmp_path):
    by_notebook = run_with_papermill(tmp_path / "papermill", tmp_path / "executed.ipynb")
    by_module = run_as_module(tmp_path / "module", tmp_path / "run.yaml")
    assert files(by_notebook) == files(by_module)
    expected = {"params.json", "steps.jsonl", "training.png", "metrics.json", "per_query-xquad-r.csv.gz",
                "projection-xquad-r.csv.gz", "model/model.safetensors", "model/hybridlib.json"}
    assert expected <= files(by_notebook), files(by_notebook)
    assert not (by_notebook / "checkpoint").exists()  # dropped once the run is complete
    for name in sorted(files(by_notebook)):
        assert comparable(by_notebook, name) == comparable(by_module, name), name


@pytest.mark.slow
@pytest.mark.torchrun
def test_torchrun_writes_the_same_files(tmp_path):
    """Two processes: rank 0 writes the same files; the steps see the same batches (dropout is drawn per rank,
    so the numbers differ from one process, see test_distributed for the exact equality without dropout)."""
    by_module = run_as_module(tmp_path / "module", tmp_path / "run.yaml")
    params_file = tmp_path / "torchrun.yaml"
    params_file.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "torchrun")}))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "hybridlib.experiment", str(params_file)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    by_torchrun = tmp_path / "torchrun" / "run"
    assert files(by_torchrun) == files(by_module)
    assert comparable(by_torchrun, "params.json") == comparable(by_module, "params.json")
    batches = lambda folder: [{k: r[k] for k in ("step", "kind", "kinds", "query_langs", "passage_langs")}  # noqa: E731
                              for r in comparable(folder, "steps.jsonl")]
    assert batches(by_torchrun) == batches(by_module)
    metrics = comparable(by_torchrun, "metrics.json")
    assert metrics["environment"]["packages"] == comparable(by_module, "metrics.json")["environment"]["packages"]
    assert 0 < metrics["benchmarks"]["xquad-r"]["map"]["multi"] <= 1
