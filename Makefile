# Everything a fresh machine needs, behind the README's two commands.
#   make run   - the main job: `deribit-kit demo` (embedded exchange, broker port, live dashboards)
#   make test  - the whole test suite (lint, types, tests; browser tests need Debian's chromium)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: run test lint bench bench-deps bench-ui clean sim watch screenshots lab docs stress

# setup.py builds the optional C loop (deribit_kit/live/_speedups.c) in place; without a C compiler
# the install goes on and the pure-Python loop is used
$(STAMP): pyproject.toml setup.py deribit_kit/live/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dashboards]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/deribit-kit demo

watch: $(STAMP)
	$(VENV)/bin/deribit-kit watch BTC-PERPETUAL

sim: $(STAMP)
	$(VENV)/bin/deribit-kit sim

lint: $(STAMP)
	$(PY) -m ruff check deribit_kit tests bench stress
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q

# the benchmarks' anchors and fast clients (ccxt, cryptofeed, picows, uvloop): not needed by the tests
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,dashboards,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) bench/sim_firehose.py

bench-deps: $(BENCH_STAMP)

bench-ui: $(STAMP)
	$(PY) bench/dashboard_cpu.py

# the reliability campaigns: 1,000 orders under connection drops, 100,000 hostile frames at the broker
# port in 3 rounds, a 30-minute soak; figures, no timed assertions (STRESS_ARGS="--quick": ~4 min)
stress: $(STAMP)
	$(PY) stress/run.py $(STRESS_ARGS)

# refresh the README's pictures (docs/screenshots/) from the browser tests
screenshots: $(STAMP)
	UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/e2e/test_ui_browser.py

clean:
	rm -rf $(VENV) build *.egg-info

# JupyterLab on notebooks/ with everything the notebooks need (the notebooks and dashboards extras)
LAB_STAMP := $(VENV)/.lab-installed
$(LAB_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,dashboards,notebooks]'
	touch $(LAB_STAMP)

# (as root - a container - JupyterLab needs --allow-root); LAB_ARGS adds options (--port 8899, --no-browser)
lab: $(LAB_STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# the documentation site (mkdocs.yml, docs/) into site/, warnings as errors; the notebooks are
# executed on this venv's kernel (JUPYTER_PATH: never another python3 kernelspec of the machine)
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,dashboards,notebooks,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	JUPYTER_PATH=$(abspath $(VENV))/share/jupyter NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
