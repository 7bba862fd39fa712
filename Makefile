# Quickstart: `make run` (set up, then the main job on real data) and `make test` (set up, then the suite).
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast bench clean

# Cache bytecode: with PYTHONDONTWRITEBYTECODE set, every process recompiles torch and Lightning (18 s vs 6 s)
unexport PYTHONDONTWRITEBYTECODE

# uv resolves and installs the pinned stack from PyPI in well under a minute (pip takes ~3.5 min).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check 'uv>=0.5'
	$(UV) pip install --quiet --python $(PY) -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The main job: tabular VAE on 50,000 real NYC flights, synthetic table, TSTR evaluation (~3 min on 2 cores).
# W&B logs offline unless you have credentials; override anything Hydra-style: make run ARGS="trainer.max_epochs=100"
run: $(STAMP)
	$(PY) train.py experiment=flights_tvae $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

bench: $(STAMP)
	$(UV) pip install --quiet --python $(PY) -e '.[dev,bench]'
	$(PY) bench/tabular_vae.py

clean:
	rm -rf logs outputs multirun .pytest_cache
