# Two commands matter: `make demo` (setup, data, train, serve) and `make test-all` (setup, full suite, as CI).
# `make help` lists every target.
SHELL := /bin/bash
# The Python for .venv: PYTHON=... if given, else the first installed one the pinned stack supports
# (3.11 to 3.13; a name that does not run, such as a pyenv shim of a version not selected, is skipped).
PYTHONS_SUPPORTED := python3.11 python3.12 python3.13 python3
PYTHON ?= $(firstword $(foreach p,$(PYTHONS_SUPPORTED),$(shell $(p) -c \
  'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' >/dev/null 2>&1 && echo $(p))))
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA_ROOT ?= data
# The synthetic demo catalogue (when data/raw/ is empty): 1,200 products with 256-pixel images, trained
# with 3 folds instead of RAKUTEN_CV_FOLDS's 5, keep `make demo` from a fresh clone under 10 minutes on
# 2 cores (the image backbone runs twice over every image, and the image head is cross-fitted per fold).
DEMO_ROWS ?= 1200
DEMO_IMAGE_SIZE ?= 256
DEMO_CV_FOLDS ?= 3
PYTEST_ARGS ?=
# `make test` and `make test-fast` run on pytest-xdist's worker processes, one a core (the trios are trained once
# a run and shared: conftest.py); PYTEST_WORKERS=0 runs them in one process. `make test-all` (CI) runs in one
# process, as CI has always run it: the system tier passed on workers once (docs/benchmarks.md), not yet often.
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS))
LINT_PATHS := src service.py tests benchmarks training tools
# The model store of every target here (train, serve, container): this checkout's own, so that a second
# clone's demo never gates against, nor hot-swaps onto, this one's models. BentoML's default is ~/bentoml,
# shared by every checkout. BENTOML_HOME=... (environment or make argument) chooses another.
ifeq ($(strip $(BENTOML_HOME)),)
BENTOML_HOME := $(CURDIR)/bentoml_home
endif
export BENTOML_HOME
# The demo's port, and its admin token's file (written once per checkout; RAKUTEN_ADMIN_TOKEN wins).
PORT ?= 3000
DEMO_TOKEN_FILE := $(CURDIR)/data/.demo-admin-token

.DEFAULT_GOAL := help
.PHONY: help setup demo data test test-all test-fast lint format docs clean-venv browser monitoring-tools container

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "settings (make demo PORT=3001 ..., or in the environment):"
	@echo "  PORT=$(PORT)  the demo's port (page at http://localhost:$(PORT)/ui)"
	@echo "  BENTOML_HOME=$(BENTOML_HOME)  the model store (default: bentoml_home/ in this checkout)"

setup: $(STAMP) ## create .venv with the locked versions and the offline ImageNet weights (idempotent)
	@$(BIN)/rakuten setup-weights >/dev/null

# Re-installs only when a lock or the project metadata changed, so a second `make setup` is instant.
# requirements.lock (training, tracking) names requirements-serving.lock (what a Bento installs) at its top;
# requirements-spark.lock adds pyspark (the spark extra: docs/scale.md).
$(STAMP): requirements-serving.lock requirements.lock requirements-nodeps.txt requirements-dev.lock \
  requirements-spark.lock pyproject.toml
	@test -x $(BIN)/python || [ -n "$(PYTHON)" ] || { echo "make setup: no Python 3.11, 3.12 or 3.13 runs here" \
	  "(tried: $(PYTHONS_SUPPORTED)). Install one, e.g. on Debian 12: apt-get install python3.11 python3.11-venv;" \
	  "with pyenv: pyenv install 3.11 && pyenv global 3.11. Or name one: make setup PYTHON=/path/to/python3.12" >&2; exit 1; }
	@echo "make setup: installing the locked packages into $(VENV): about 2-4 minutes on the first run"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==26.3
	$(BIN)/python -m pip install -q -r requirements.lock -r requirements-dev.lock -r requirements-spark.lock
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

# The challenge files in data/raw/ when present, a synthetic catalogue otherwise.
DATA_SRC := $(if $(wildcard $(DATA_ROOT)/raw/X_train_update.csv),$(DATA_ROOT)/raw,$(DATA_ROOT)/synthetic)
DEMO_SYNTHETIC := $(if $(filter $(DATA_ROOT)/raw,$(DATA_SRC)),,yes)

data: setup ## load data/raw/ (or a synthetic catalogue) into the SQL store
	@[ -f $(DATA_SRC)/X_train_update.csv ] || { echo "make data: writing a synthetic catalogue of $(DEMO_ROWS) products" \
	  "to $(DATA_SRC)/ (about 15 s)"; $(BIN)/rakuten data synth --out $(DATA_SRC) --rows $(DEMO_ROWS) \
	  --image-size $(DEMO_IMAGE_SIZE) --seed 0; }
	@echo "data source: $(DATA_SRC)$(if $(DEMO_SYNTHETIC), (synthetic demo catalogue: put the challenge files in $(DATA_ROOT)/raw/ to train on real products))"
	$(BIN)/rakuten data load --data-dir $(DATA_SRC)

# Train on what `make data` loaded (the default SQLite store) into BENTOML_HOME, then serve until Ctrl-C;
# the page at /ui shows examples from the same data folder. tools/demo_serve.py passes the admin token to
# the server and prints the page's address, the token and how to stop once /readyz answers.
demo: data ## set up, load, train, then serve on PORT (3000): page at /ui; models in BENTOML_HOME
	@echo "make demo: training the text, image and fusion models into $(BENTOML_HOME)$(if $(DEMO_SYNTHETIC), (about 1-3 minutes))"
	$(if $(DEMO_SYNTHETIC),RAKUTEN_CV_FOLDS=$(DEMO_CV_FOLDS) )$(BIN)/rakuten train all
	PATH=$(abspath $(BIN)):$$PATH RAKUTEN_UI_EXAMPLES_DIR=$(abspath $(DATA_SRC)) \
	  $(BIN)/python tools/demo_serve.py --port $(PORT) --token-file $(DEMO_TOKEN_FILE) -- \
	  $(BIN)/bentoml serve service:RakutenClassifier --port $(PORT) --timeout-graceful-shutdown 30

# The browser tests' Chromium, the monitoring tests' Prometheus and Alertmanager and the manifest tests' checkov
# come from these prerequisites, never from a test. The tiers, and what each runs: docs/reliability.md, "The test suite".
test: setup browser monitoring-tools ## the suite but its system tier: unit, in-process, HTTP, end to end on the sample
	$(PYTEST) $(XDIST) -m "not system" $(PYTEST_ARGS)

test-all: setup browser monitoring-tools deploy-tools ## everything, as CI: `make test` + Bento, container, Spark, demos, k8s, Prometheus
	$(PYTEST) $(PYTEST_ARGS)

test-fast: setup monitoring-tools ## the units, under 2 minutes: no trained trio, no server, no long fit (-m "not slow")
	$(PYTEST) $(XDIST) -m "not slow" $(PYTEST_ARGS)

lint: setup ## ruff (lint and format check) and mypy, as CI and pre-commit run them
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

format: setup ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

# The settings tables of docs/training.md, serving.md and monitoring.md, from config.py's fields (their
# environment name, default and description) of this checkout's src/ (PYTHONPATH), whatever .venv's install
# points at; tests/test_docs.py fails when a committed table differs.
docs: setup ## write the settings tables in docs/ from config.py (after adding or changing a setting)
	PYTHONPATH=src $(BIN)/python tools/settings_tables.py

clean-venv: ## remove .venv
	rm -rf $(VENV)

# Headless Chromium for the browser tests (tests/test_ui.py); Debian's package, not `playwright install`.
browser: ## install Debian's Chromium for the browser tests when missing
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# Prometheus (with promtool) and Alertmanager for the monitoring tests (tests/test_prometheus.py, docs/monitoring.md):
# Debian's packages. The lock timeout waits for another apt-get (an unattended upgrade) instead of failing.
monitoring-tools: ## install Debian's prometheus and prometheus-alertmanager when missing
	command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null || \
	  (apt-get -o DPkg::Lock::Timeout=300 update -qq && \
	   apt-get install -y -qq -o DPkg::Lock::Timeout=300 prometheus prometheus-alertmanager)

CONTAINER_IMAGE ?= rakuten-classifier:latest

# The Bento with the production models now in the store, then its OCI image, with podman (no Docker
# daemon) on a base image built from Debian's packages (no registry); deploy/container/build.sh says how.
# The image installs requirements-serving.lock only: no torch, no CUDA libraries (docs/deployment.md).
container: setup ## build the Bento and its OCI image rakuten-classifier:latest with podman (no Docker daemon)
	deploy/container/build.sh $(CONTAINER_IMAGE) $(BIN)

# Kubernetes manifests of the scale-apart layout (deploy/k8s). Their tools live in their own venv, pinned by
# deploy/requirements-validate.lock: checkov needs other versions of packages that requirements.lock pins.
# The checks skipped below are explained one by one in deploy/k8s/README.md.
.PHONY: deploy-tools deploy-check
DEPLOY_VENV := .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed-stamp
DEPLOY_K8S_VERSION := 1.34.0
DEPLOY_CHECKOV_SKIP := CKV_K8S_15,CKV_K8S_35,CKV_K8S_40,CKV_K8S_43

deploy-tools: $(DEPLOY_STAMP) ## create .venv-deploy with kubernetes-validate and checkov (idempotent)

$(DEPLOY_STAMP): deploy/requirements-validate.lock
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install -q --upgrade pip==26.3
	$(DEPLOY_VENV)/bin/python -m pip install -q -r deploy/requirements-validate.lock
	touch $(DEPLOY_STAMP)

deploy-check: deploy-tools ## validate deploy/k8s against the Kubernetes schemas, then scan it with checkov
	$(DEPLOY_VENV)/bin/kubernetes-validate --strict -k $(DEPLOY_K8S_VERSION) $$(find deploy/k8s -name '*.yaml' | sort)
	$(DEPLOY_VENV)/bin/checkov --framework kubernetes -d deploy/k8s --skip-check $(DEPLOY_CHECKOV_SKIP) \
	  --skip-download --compact --quiet
