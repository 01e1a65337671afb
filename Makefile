# One-command entry points. `make demo` = set up + run the demo sweep; `make test-fast` = the unit and in-process
# integration tests (minutes); `make test` = set up + run everything (what .ci/run runs).
VENV ?= .venv
PY := $(VENV)/bin/python
SWEEP ?= params/demo.yaml

.PHONY: setup test test-fast test-slurm demo demo-alpha data lab

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

# The fast tier: unit and in-process integration tests, no sweep through papermill, notebook, browser, torchrun
# or Slurm (tests/ only). Under 5 minutes on 2 cores.
FAST := not slow and not notebook and not browser and not torchrun and not slurm
test-fast: setup
	$(PY) -m pytest -q -m "$(FAST)" --durations=10 tests

# The full suite: unit and integration tests, then every notebook through nbval in the cheap CI profile (params/ci.yaml); then
# the tests marked slurm in a pytest run of their own, so its summary line counts them (they use the one-node
# cluster of .ci/slurm-up.sh, starting it when it is not up; without root and apt-get they skip, saying why).
test: setup
	rm -rf .cache/ci-runs  # the CI profile's run folder: always a fresh run
	HYBRIDLIB_PARAMS_OVERRIDE=params/ci.yaml $(PY) -m pytest -q --nbval-lax --durations=10 -m "not slurm" tests notebooks
	$(MAKE) --no-print-directory test-slurm

test-slurm: setup
	@echo "--- the Slurm launcher against a real Slurm (tests marked slurm)"
	$(PY) -m pytest -q -rs -m slurm tests

demo: setup
	$(PY) -m hybridlib.sweep $(SWEEP)

# The alpha curve on the mono-cross edge (params/demo-alpha.yaml: 5 alphas x 3 seeds at 600 groups + baseline),
# two runs at a time as it was run for outputs/demo-alpha: 70.5 min on 2 cores.
demo-alpha: setup
	$(PY) -m hybridlib.sweep params/demo-alpha.yaml --launcher local --workers 2

# JupyterLab on loopback (LAB_IP=0.0.0.0 to serve other machines); as root (containers) it needs --allow-root.
LAB_IP ?= 127.0.0.1
lab: setup
	$(PY) -m ipykernel install --user --name hybridlib --display-name "Python (hybridlib)"
	$(VENV)/bin/jupyter lab --ip=$(LAB_IP) $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/
