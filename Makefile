# Everything a fresh machine needs, behind the README's two commands.
#   make run   - the main job: the embedded exchange plus a live terminal view of a book
#   make test  - the whole test suite (lint, types, tests)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean sim

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/deribit-kit watch BTC-PERPETUAL

sim: $(STAMP)
	$(VENV)/bin/deribit-kit sim

lint: $(STAMP)
	$(PY) -m ruff check deribit_kit tests bench dashboards
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/sim_firehose.py

clean:
	rm -rf $(VENV) build *.egg-info
