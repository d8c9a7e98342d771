# Two commands matter: `make demo` (setup, data, train, serve) and `make test` (setup, full suite).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA_ROOT ?= data
DEMO_ROWS ?= 2000
PYTEST_ARGS ?=

.PHONY: setup demo data test test-fast clean-venv browser

setup: $(STAMP)
	@$(BIN)/rakuten setup-weights >/dev/null

# Re-installs only when the lock or the project metadata changed, so a second `make setup` is instant.
$(STAMP): requirements.lock requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==26.3
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

# The challenge files in data/raw/ when present, a synthetic catalogue otherwise.
DATA_SRC := $(if $(wildcard $(DATA_ROOT)/raw/X_train_update.csv),$(DATA_ROOT)/raw,$(DATA_ROOT)/synthetic)

data: setup
	@[ -f $(DATA_SRC)/X_train_update.csv ] || $(BIN)/rakuten data synth --out $(DATA_SRC) --rows $(DEMO_ROWS) --seed 0
	@echo "data source: $(DATA_SRC)"
	$(BIN)/rakuten data load --data-dir $(DATA_SRC)

PORT ?= 3000

# Train on what `make data` loaded (the default SQLite store), then serve until Ctrl-C;
# the page at /ui shows examples from the same data folder.
demo: data
	$(BIN)/rakuten train all
	PATH=$(CURDIR)/$(BIN):$$PATH RAKUTEN_UI_EXAMPLES_DIR=$(CURDIR)/$(DATA_SRC) \
	  $(BIN)/bentoml serve service:RakutenClassifier --port $(PORT) --timeout-graceful-shutdown 30

test: setup browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)

# Headless Chromium for the browser tests (tests/test_ui.py); Debian's package, not `playwright install`.
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
