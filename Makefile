# One-command entry points. `make demo` = set up + run the demo sweep; `make test` = set up + run all tests.
VENV ?= .venv
PY := $(VENV)/bin/python
SWEEP ?= params/demo.yaml

.PHONY: setup test demo data lab

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch, pinned (see README: a GPU machine installs its own CUDA build first)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# Download XQuAD-R and MLQA-R into the user cache (sha256-checked); not needed when HYBRIDLIB_DATA_DIR is set.
data: setup
	$(PY) -c "from hybridlib.data import load_benchmark as l; l('xquad-r'); l('mlqa-r')"

# Unit and integration tests, then every notebook through nbval in the cheap CI profile (params/ci.yaml).
test: setup
	rm -rf .cache/ci-runs  # the CI profile's run folder: always a fresh run
	HYBRIDLIB_PARAMS_OVERRIDE=params/ci.yaml $(PY) -m pytest -q --nbval-lax --durations=10 tests notebooks

demo: setup
	$(PY) -m hybridlib.sweep $(SWEEP)

lab: setup
	$(PY) -m ipykernel install --user --name hybridlib --display-name "Python (hybridlib)"
	$(VENV)/bin/jupyter lab notebooks/
