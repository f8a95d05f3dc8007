# airflow-desc: the commands a user and CI run. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DESC_SITE_DIR ?= /var/lib/airflow-desc-site
SITE_ENV := $(DESC_SITE_DIR)/env.sh
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Integration tests wait on SLURM (a TIMEOUT takes ~75 s): run them side by side.
PYTEST_WORKERS ?= 4

.PHONY: help venv lsst-venv lint unit integration test test-faults demo bench bench-status site-up site-down site-status constraints clean

help:
	@echo "make demo         install what is missing, start the local site, run a small DC1 through Airflow, print the table, write the report"
	@echo "make test         the whole suite: lint, unit tests, integration tests on the local site"
	@echo "make lint         ruff + mypy + the import contracts (.importlinter)"
	@echo "make unit         unit tests only (no services)"
	@echo "make lsst-venv    the LSST middleware venv of the ctrl_bps plugin (no Airflow; ~100 s, once)"
	@echo "make site-up      start the local site (two SLURM clusters, sshd logins, PostgreSQL)"
	@echo "make site-down    stop it (docker/site/down --wipe also deletes its state)"
	@echo "make site-status  show what runs"
	@echo "make bench        the benchmarks (never part of make test; dc1_scale.py, latency.py by hand)"
	@echo "make bench-status status table, CLI start-up and history writer at DC1 scale (~40 min)"
	@echo "make test-faults  inject each fault on the local site under a real Airflow; one row per fault (FAULT=name: one)"
	@echo "make constraints  re-pin constraints.txt from the current venv"

# The venv is installed with constraints.txt: the exact versions `make test` was run with.
$(VENV)/.installed: setup.cfg constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,celery]'
	@touch $@

venv: $(VENV)/.installed

# The LSST middleware (ctrl_bps, pipe_base, daf_butler ...) and airflow-desc-bps in a venv of their own,
# $(DESC_SITE_DIR)/lsst-venv, pinned by constraints-bps.txt: tests/integration/test_bps_prepare.py runs
# `bps prepare` there (skipped without it). Remade only when constraints-bps.txt changes.
lsst-venv:
	docker/site/lsst-venv

lint: venv
	$(BIN)/ruff check airflow_desc tests dags benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

unit: venv
	$(BIN)/pytest tests/unit

site-up:
	$(SUDO) docker/site/up

site-down:
	$(SUDO) docker/site/down

site-status:
	docker/site/status

integration: venv site-up
	source $(SITE_ENV) && $(BIN)/pytest -n $(PYTEST_WORKERS) -m "not serial" tests/integration
	source $(SITE_ENV) && $(BIN)/pytest -m serial tests/integration tests/e2e

# tests/run-suite: the e2e tests (one real Airflow at a time) in the background, beside the tests that
# may share the site (side by side) and then the `serial` integration tests (one at a time); then,
# alone, the `exclusive` ones (they stop or reconfigure what the others use). A phase that fails or
# selects no test (pytest exits 5) fails the target, after every phase has run.
test: venv lsst-venv site-up lint
	source $(SITE_ENV) && PYTEST=$(BIN)/pytest PYTEST_WORKERS=$(PYTEST_WORKERS) tests/run-suite

# The fault matrix (tests/faults): not part of `make test` (about 20 min here: 12 faults took 15). It stops site services
# other tests use, so it holds the site lock exclusively. FAULT=sshd-down runs one fault; FAULTS_DEPLOYMENT
# names the Airflow it runs on: local (LocalExecutor) or celery (tests/faults/deployment.py).
FAULTS_DEPLOYMENT ?= local
test-faults: venv site-up
	source $(SITE_ENV) && flock -x /tmp/desc-site.lock $(BIN)/python -m tests.faults \
		--deployment $(FAULTS_DEPLOYMENT) $(if $(FAULT),--fault $(FAULT))

demo: venv site-up
	source $(SITE_ENV) && $(BIN)/python -m airflow_desc.demo --out out/demo

# Each benchmark holds the site (other users of the lock wait) and runs even when one before it missed
# its target; the target fails at the end, naming those that missed. benchmarks/packing.py: ~10 min.
bench: venv site-up
	source $(SITE_ENV) && missed=""; for b in benchmarks/*.py; do \
		case $$b in benchmarks/dc1_scale.py|benchmarks/status_speed.py|benchmarks/latency.py) continue;; esac; \
		echo "== $$b"; flock -x /tmp/desc-site.lock $(BIN)/python $$b || missed="$$missed $$b"; done; \
		if [ -n "$$missed" ]; then echo "missed their targets:$$missed"; exit 1; fi

# The status table, CLI start-up and writer at DC1 scale, 3 shapes x 2 databases: ~40 min, shared lock
# (it writes its own PostgreSQL schema).
bench-status: venv site-up
	source $(SITE_ENV) && flock -s /tmp/desc-site.lock $(BIN)/python benchmarks/status_speed.py --batch 20000

constraints: venv
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^airflow-desc' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache out
