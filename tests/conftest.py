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
