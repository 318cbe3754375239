# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local CPU build first, so that no later resolution pulls CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist; a test file's tests stay in one): 0 runs them in this one.
TEST_WORKERS ?= 2

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export RAY_USAGE_STATS_ENABLED ?= 0
# Prefect's ephemeral API server gets 20 s to start by default; a busy machine needs more.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: install demo test reliability lint bench clean-demo

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,postgres,torchcodec,plot,ray,lineage]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install tspipe with its dev, postgres, torchcodec, plot, ray and lineage extras

demo: $(STAMP)  ## SynthActions + the whole pipeline on the embedded defaults (CPU)
	$(BIN)/tspipe catalog upgrade
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/tspipe run --params params.yaml
	@echo
	@echo "== What the demo left =="
	$(BIN)/tspipe catalog datasets
	$(BIN)/tspipe catalog list
	$(BIN)/tspipe catalog best --metric bmn.auc
	$(BIN)/tspipe catalog best --metric gtad.average_map
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc status
	@echo "MLflow runs: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

test: $(STAMP)  ## the test suite (slow end-to-end cases included, sized down)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

reliability: $(STAMP)  ## the fault and bad-input suite at full size (more kill points and seeds); prints its table
	TSPIPE_RELIABILITY=full PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest tests/reliability $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	@ls benchmarks/*.py >/dev/null 2>&1 && for b in benchmarks/*.py; do $(BIN)/python $$b; done || echo "no benchmarks yet"

clean-demo:  ## remove the demo's outputs (keeps .venv)
	rm -rf data features models results metrics plots reports mlflow.db mlartifacts catalog.db catalog.db-* .tspipe dvc.lock
