"""Test set-up: offline, real evaluation data from ../shared/data (or HYBRIDLIB_DATA_DIR)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Where the real XQuAD-R / MLQA-R files are: $HYBRIDLIB_DATA_DIR, else ../shared/data (the CI copy), else
# the user cache that `make data` fills. Tests never download.
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if "HYBRIDLIB_DATA_DIR" not in os.environ:
    from hybridlib.cache import cache_dir

    for _candidate in (_SHARED, cache_dir("data")):
        if (_candidate / "mlqa-r").is_dir() and (_candidate / "xquad-r").is_dir():
            os.environ["HYBRIDLIB_DATA_DIR"] = str(_candidate)
            break

DATA_DIR = os.environ.get("HYBRIDLIB_DATA_DIR")
if DATA_DIR:  # absolute, so tests that build file:// URLs or change directory still find it
    DATA_DIR = os.environ["HYBRIDLIB_DATA_DIR"] = str(Path(DATA_DIR).resolve())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR:
        pytest.fail("no evaluation data: run `make data` (downloads, sha256-checked) or set HYBRIDLIB_DATA_DIR "
                    "to a folder holding xquad-r/ and mlqa-r/")
    return Path(DATA_DIR)


@pytest.fixture(scope="session")
def mlqa(data_dir):
    from hybridlib.data.benchmarks import load_benchmark

    return load_benchmark("mlqa-r", data_dir=data_dir)


@pytest.fixture(scope="session")
def mlqa_pairs(mlqa):
    from hybridlib.data.benchmarks import pairs_from_benchmark

    return pairs_from_benchmark(mlqa)


@pytest.fixture(scope="session")
def xquad(data_dir):
    from hybridlib.data.benchmarks import load_benchmark

    return load_benchmark("xquad-r", data_dir=data_dir)


@pytest.fixture(autouse=True)
def _no_notebook_profile(monkeypatch):
    """HYBRIDLIB_PARAMS_OVERRIDE selects the notebooks' CI profile; library tests must not see it."""
    monkeypatch.delenv("HYBRIDLIB_PARAMS_OVERRIDE", raising=False)


def pytest_collection_modifyitems(items):
    """nbval's items (the cells of notebooks/*.ipynb) belong to the notebook tier."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)


# --- the tiny sweep: real data, the tiny random model, papermill over the real notebooks ----------------------
BASE = """
  model: tiny-random
  steps: 3
  batch_size: 8
  max_groups: 10
  eval_languages: [en, de, th]
  eval_benchmarks: [xquad-r, tatoeba]
  tatoeba_max_pairs: 20
  query_max_length: 24
  passage_max_length: 32
  save_model: false"""
TINY_SWEEP = """
sweep: tiny
output_dir: {out}
base:""" + BASE + """
runs:
  baseline: {{steps: 0}}
  cross: {{ratio_mono: 0.0, ratio_cross: 1.0}}
  mono: {{ratio_mono: 1.0, ratio_cross: 0.0}}
  broken: {{ratio_mono: 1.0, ratio_cross: 0.0, batch_size: 2000}}   # more than the 1148 groups: fails at run time
"""


def write_sweep(folder: Path, text: str = TINY_SWEEP, **fields) -> Path:
    spec = folder / "sweep.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    spec.write_text(text.format(out=folder / "out", **fields))
    return spec


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """``TINY_SWEEP`` run once per session the default way (one run at a time, then 03-05), read by the sweep and
    launcher tests. Each run gets the CPU threads of one of two parallel slots: float results depend on the thread
    count (rounding at 1e-7), so a parallel rerun must match it exactly. Tests that change it work on a copy."""
    import contextlib
    import io
    import types

    from hybridlib.runs.local import LocalLauncher
    from hybridlib.runs.sweep import run_sweep

    folder = tmp_path_factory.mktemp("tiny-sweep")
    threads = LocalLauncher(workers=2).threads
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("OMP_NUM_THREADS", str(threads))
        patch.delenv("HYBRIDLIB_PARAMS_OVERRIDE", raising=False)
        spec = write_sweep(folder)
        summary = run_sweep(spec)
    return types.SimpleNamespace(spec=spec, out=folder / "out", summary=summary, printed=printed.getvalue(),
                                 threads=threads)
