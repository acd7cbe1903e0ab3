# Two commands do all set-up on a fresh machine:
#   make demo   - federated run: researcher + 3 data owners as local processes
#   make test   - lint (ruff, mypy) + the whole test suite (installs everything it needs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINT_DIRS := $(wildcard src tests examples benchmarks)

.PHONY: setup demo test lint format bench syftbox-venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m syft_flwr simulate examples/fedavg_tabular --num-data-owners 3

syftbox-venv:
	bash scripts/setup_syftbox_venv.sh || echo "syftbox venv unavailable: SyftBox network tests will be skipped with the reason"

lint: setup
	$(PY) -m ruff check $(LINT_DIRS)
	$(PY) -m ruff format --check $(LINT_DIRS)
	$(PY) -m mypy

format: setup
	$(PY) -m ruff format $(LINT_DIRS)
	$(PY) -m ruff check --fix $(LINT_DIRS)

test: setup syftbox-venv lint
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/bench_transport.py

clean:
	rm -rf $(VENV) .venv-syftbox .pytest_cache .ruff_cache
