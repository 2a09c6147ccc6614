# The two commands a newcomer needs: `make run` and `make test`. Everything they depend on
# (Python environment, Slurm cluster, PostgreSQL, S3) is installed and started by the targets
# below; each is idempotent and fast when its work is already done.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= $(CURDIR)/.venv
export VENV
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help venv cluster cluster-down test-tools job-python test-services test-services-down run test test-unit bench

help:
	@echo "make run           bring up the dev cluster and serve the gateway on $(HOST):$(PORT)"
	@echo "make test          bring up cluster, PostgreSQL and S3, then run the whole test suite"
	@echo "make test-unit     the fast unit tests only (no services)"
	@echo "make bench         run the benchmarks in tests/bench"
	@echo "make cluster       provision/start the dev Slurm cluster with ansible/ (idempotent)"
	@echo "make cluster-down  stop the daemons the dev launcher started"
	@echo "make test-services start PostgreSQL and SeaweedFS (S3) for the tests"
	@echo "make job-python    torch and Ray for the runtime tests' jobs, on shared storage"
	@echo "make test-services-down stop them"

venv: $(VENV)/.installed

# Reinstalled when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

cluster: venv
	dev/cluster-up

cluster-down:
	@if command -v slurm-dev-daemon >/dev/null; then slurm-dev-daemon stop-all; else echo "no dev cluster here"; fi

# What the runtime tests run inside jobs (torchrun with gloo, a Ray cluster): a Python
# environment on storage every node shares, from Debian's python3 so every job user can run it.
JOB_PYTHON_DIR ?= /var/lib/slurm-gateway/job-python
job-python: $(JOB_PYTHON_DIR)/.installed

$(JOB_PYTHON_DIR)/.installed:
	/usr/bin/python3 -m venv $(JOB_PYTHON_DIR)
	$(JOB_PYTHON_DIR)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0 ray
	chmod -R a+rX $(JOB_PYTHON_DIR)
	touch $@

test-services: venv test-tools
	dev/test-services up

# Tools the tests call besides Python: shellcheck checks every rendered job script.
test-tools:
	@command -v shellcheck >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck; }

test-services-down:
	dev/test-services down

test-unit: venv test-tools
	$(BIN)/pytest tests/unit

test: cluster test-services job-python
	@start=$$SECONDS; \
	eval "$$(dev/test-services env)" && $(BIN)/pytest; rc=$$?; \
	echo "test suite: $$((SECONDS - start)) s"; exit $$rc

# wrk generates the HTTP load of the status benchmarks.
bench: cluster test-services
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	eval "$$(dev/test-services env)" && PYTHONPATH=$(CURDIR) $(BIN)/python tests/bench/run_benchmarks.py

run: cluster
	@echo
	@echo "slurm-gateway on http://$(HOST):$(PORT) (dev/gateway.toml: SQLite and local storage under ./var). Try:"
	@echo "  curl -s http://$(HOST):$(PORT)/readyz"
	@echo "  curl -s http://$(HOST):$(PORT)/schema/openapi.json"
	@echo "  dev/try-it     (in another shell: creates tenant demo with member alice, uploads a file,"
	@echo "                 submits a GPU job that reads it, follows it and downloads its output;"
	@echo "                 prints every call it makes; ends with finance's cost report as CSV)"
	@echo "Tokens: $(BIN)/slurm-gateway token --user admin --role admin"
	@echo "        $(BIN)/slurm-gateway token --tenant demo --user alice --role user"
	@echo "        $(BIN)/slurm-gateway token --user finance --role finance"
	@echo "The cluster: sinfo, squeue, sacct work in any shell here. Ctrl-C stops the gateway;"
	@echo "'make cluster-down' stops the cluster."
	@echo
	$(BIN)/slurm-gateway migrate --config dev/gateway.toml
	$(BIN)/slurm-gateway serve --config dev/gateway.toml --host $(HOST) --port $(PORT)
