# Two commands matter: `make demo` (setup, data, train, serve) and `make test` (setup, full suite).
# `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA_ROOT ?= data
DEMO_ROWS ?= 2000
PYTEST_ARGS ?=
LINT_PATHS := src service.py tests benchmarks training

.DEFAULT_GOAL := help
.PHONY: help setup demo data test test-fast lint format clean-venv browser

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv with the locked versions and the offline ImageNet weights (idempotent)
	@$(BIN)/rakuten setup-weights >/dev/null

# Re-installs only when a lock or the project metadata changed, so a second `make setup` is instant.
$(STAMP): requirements.lock requirements-nodeps.txt requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==26.3
	$(BIN)/python -m pip install -q -r requirements.lock -r requirements-dev.lock
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

# The challenge files in data/raw/ when present, a synthetic catalogue otherwise.
DATA_SRC := $(if $(wildcard $(DATA_ROOT)/raw/X_train_update.csv),$(DATA_ROOT)/raw,$(DATA_ROOT)/synthetic)

data: setup ## load data/raw/ (or a synthetic catalogue) into the SQL store
	@[ -f $(DATA_SRC)/X_train_update.csv ] || $(BIN)/rakuten data synth --out $(DATA_SRC) --rows $(DEMO_ROWS) --seed 0
	@echo "data source: $(DATA_SRC)"
	$(BIN)/rakuten data load --data-dir $(DATA_SRC)

PORT ?= 3000

# Train on what `make data` loaded (the default SQLite store), then serve until Ctrl-C;
# the page at /ui shows examples from the same data folder.
demo: data ## set up, load, train, then serve on :3000 (page at /ui)
	$(BIN)/rakuten train all
	PATH=$(CURDIR)/$(BIN):$$PATH RAKUTEN_UI_EXAMPLES_DIR=$(CURDIR)/$(DATA_SRC) \
	  $(BIN)/bentoml serve service:RakutenClassifier --port $(PORT) --timeout-graceful-shutdown 30

test: setup browser ## the whole suite (unit, in-process, HTTP, end to end on ../shared/rakuten-sample)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup ## the suite without the slow tests
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup ## ruff (lint and format check) and mypy, as CI and pre-commit run them
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

format: setup ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

clean-venv: ## remove .venv
	rm -rf $(VENV)

# Headless Chromium for the browser tests (tests/test_ui.py); Debian's package, not `playwright install`.
browser: ## install Debian's Chromium for the browser tests when missing
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
