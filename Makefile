# backoffice-kpi: install, test, lint, and the local stack.
# Every tool runs from .venv/bin explicitly; nothing depends on an activated virtualenv.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful pip install; pip runs again only when pyproject.toml or the
# constraints file is newer.
STAMP := $(VENV)/.installed
# The tested versions of every dependency (make lock writes it from the ranges in pyproject).
CONSTRAINTS := constraints.txt
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check
COMPILED := streams/_compiled.sha256
# The compiled modules are listed in streams/engine_build.py (COMPILED_MODULES).
COMPILED_SOURCES := streams/engine_build.py tooling/build.py \
	$(wildcard streams/core/*.py streams/kpis/*.py)

# command:Debian package, for the servers and tools the tests and the stack use. Maven only
# resolves the Kafka jars, so it is not needed when KAFKA_HOME points at a Kafka 4.x.
APT_PACKAGES := redis-server:redis-server promtool:prometheus java:default-jre-headless \
	openssl:openssl kcat:kcat \
	$(if $(KAFKA_HOME),,mvn:maven)

.PHONY: help install lock system-deps kafka-jars test test-unit lint demo stack-up stack-down \
	bench bench-long soak clean

help:
	@echo "make install     .venv with the package and dev tools, the compiled engine,"
	@echo "                 system packages, Kafka jars"
	@echo "make test        unit and integration tests (starts and stops its own Kafka + Redis)"
	@echo "make test-unit   unit tests only (no Java, Kafka or Redis needed)"
	@echo "make lock        rewrite constraints.txt from what pyproject's ranges resolve to"
	@echo "                 in .venv (UPGRADE=1: the newest versions they allow)"
	@echo "make lint        ruff check, ruff format --check, mypy"
	@echo "make stack-up    start Kafka and Redis on KPI_KAFKA_BOOTSTRAP / KPI_REDIS_URL"
	@echo "make stack-down  stop them"
	@echo "make demo        scripts/demo.sh"
	@echo "make bench       python -m bench"
	@echo "make bench-long  3M events through one worker, in 8 slices (flat cost over months)"
	@echo "make soak        rebalance soak: SEED=1 SEEDS=3 CHANGES=20 MINUTES=30 (its own stack)"
	@echo "make clean       stop the stack, remove .venv, .stack and caches"

install: $(STAMP) $(COMPILED) system-deps kafka-jars

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -c $(CONSTRAINTS) -e '.[dev]'
	@touch $(STAMP)

# Without -c: pip keeps each installed version that is still within pyproject's ranges and
# moves the others (UPGRADE=1: all of them, to the newest allowed); then the versions of the
# whole closure, bench included, are written to constraints.txt.
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) $(if $(UPGRADE),--upgrade --upgrade-strategy eager) -e '.[dev,bench]'
	$(BIN)/python -m tooling.lock
	@touch $(STAMP)

# The engine compiled with mypyc (~20 s; rebuilt when its sources change). Without a C
# compiler it stays pure Python (after installing one: .venv/bin/python -m tooling.build).
$(COMPILED): $(STAMP) $(COMPILED_SOURCES)
	$(BIN)/python -m tooling.build

# Installs what is missing when root (CI, dev containers); otherwise says what to install.
system-deps:
	@missing=""; \
	for pair in $(APT_PACKAGES); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq; \
	  apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "missing:$$missing"; \
	  echo "install them with: sudo apt-get install$$missing"; \
	  exit 1; \
	fi

# Resolves the Kafka jars once (mvn, ~50 MB into ~/.cache/backoffice-kpi); instant afterwards.
kafka-jars: $(STAMP) system-deps
	$(BIN)/kpi stack fetch

test: install
	$(BIN)/pytest -q tests

test-unit: $(STAMP) $(COMPILED)
	$(BIN)/pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

stack-up: install
	$(BIN)/kpi stack up

stack-down: $(STAMP)
	$(BIN)/kpi stack down

demo: install
	bash scripts/demo.sh

# BENCH_EVENTS=50000 for a quick run; see bench/README.md. The Quix Streams peer gets its
# own virtualenv (.venv/quix): quixstreams pins pydantic < 2.14, the product 2.14.
bench: install
	@if [ ! $(VENV)/.bench-installed -nt pyproject.toml ] \
	    || [ ! $(VENV)/.bench-installed -nt $(CONSTRAINTS) ] \
	    || [ ! $(VENV)/.bench-installed -nt bench/requirements-quix.txt ]; then \
	  $(PIP) -c $(CONSTRAINTS) -e '.[dev,bench]' && \
	  { test -x $(VENV)/quix/bin/python || $(PYTHON) -m venv $(VENV)/quix; } && \
	  $(VENV)/quix/bin/python -m pip install -q --disable-pip-version-check \
	    -r bench/requirements-quix.txt && \
	  touch $(VENV)/.bench-installed; \
	fi
	$(BIN)/python -m bench

# Issue 18's long run: three million events (about eight months of the simulated company)
# through one worker with all KPIs, in eight slices (events/s, CPU per event, RSS, state).
bench-long: install
	BENCH_EVENTS=$${BENCH_EVENTS:-3000000} BENCH_PHASES=$${BENCH_PHASES:-product} \
	BENCH_REPEAT=$${BENCH_REPEAT:-1} BENCH_SLICES=$${BENCH_SLICES:-8} $(MAKE) bench

# Workers of one group killed, stopped, started and restarted at random while a live log
# streams in; each seed on a fresh stack of its own, exact against the reference. No new seed
# starts after MINUTES; one seed with 20 changes takes about 3 minutes.
SEED ?= 1
SEEDS ?= 3
CHANGES ?= 20
MINUTES ?= 30
soak: install
	$(BIN)/python -m tests.integration.soak --seed $(SEED) --seeds $(SEEDS) \
	  --changes $(CHANGES) --minutes $(MINUTES)

clean:
	@if [ -x $(BIN)/kpi ]; then $(BIN)/kpi stack down || true; fi
	rm -rf $(VENV) .stack .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
	rm -f streams/_compiled.sha256 streams/*.so streams/core/*.so streams/kpis/*.so
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -maxdepth 2 -name '*.egg-info' -type d -prune -exec rm -rf {} +
