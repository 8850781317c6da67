# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# The environment lives in .venv/ (uv, pinned by requirements.lock).

SHELL := /bin/bash
# The interpreter .venv is made from: the distribution's Python 3.11 where there is one
# (Debian's is built with profile-guided optimisation and linked statically; every stage
# and `make test` spend about 9% less CPU on it than on a default source build such as
# pyenv's), else python3. `make env PYTHON=...` on a fresh checkout (no .venv) picks another.
PYTHON ?= $(or $(wildcard /usr/bin/python3.11),python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# pip's configured find-links may hold the CPU build of torch; uv ignores pip's
# configuration, so hand it over (never a machine path in this file). Deferred (=): only the
# install targets ask pip, not every make command.
FIND_LINKS = $(shell python3 -m pip config get global.find-links 2>/dev/null)
UV_FLAGS = --python $(VENV)/bin/python $(foreach d,$(FIND_LINKS),--find-links $(d))
STAMP := $(VENV)/.installed

export PATH := $(BIN):$(PATH)
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__PARALLELISM := 2
export AIRFLOW__API__HOST := 127.0.0.1
# No usage telemetry (Evidently, MLflow, DVC; the network is closed anyway). The package
# sets the same defaults on import (src/nextbuy/__init__.py) for every other entry point.
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

.PHONY: run run-preset test test-e2e test-benches lint format env spark lock summary mlflow-ui serve plots clean dashboards airflow stack-check results docs docs-build

env: $(STAMP)

$(STAMP): pyproject.toml benchmarks/pyproject.toml requirements.lock
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); python3 -m venv $(VENV); }
	@test -x $(VENV)/bin/uv || $(VENV)/bin/python -m pip install -q uv
	$(VENV)/bin/uv pip install $(UV_FLAGS) --compile-bytecode -r requirements.lock
	$(VENV)/bin/uv pip install $(UV_FLAGS) --no-deps -e . -e benchmarks
	@touch $@

# The Spark engine (engine.kind: spark; docs/how-to/large-catalogues.md): pyspark 4, the optional
# extra, into .venv. Spark also needs Java 17 (Debian: apt-get install openjdk-17-jre-headless).
# With Java here it also writes the class archive Spark's JVMs start from (engines/spark/classes.py),
# again whenever requirements.lock is newer than it.
SPARK_CLASSES := $(VENV)/share/nextbuy/spark-classes.jsa
spark: $(STAMP)
	$(VENV)/bin/uv pip install $(UV_FLAGS) --compile-bytecode -e '.[spark]'
	@if ! command -v java >/dev/null 2>&1 && [ -z "$$JAVA_HOME" ]; then \
		echo "no java found: Spark needs Java 17 (apt-get install openjdk-17-jre-headless)"; \
	elif [ ! -f $(SPARK_CLASSES) ] || [ requirements.lock -nt $(SPARK_CLASSES) ]; then \
		$(BIN)/python -m nextbuy.engines.spark.classes 2>$(VENV)/spark-classes.log || \
		{ echo "no Spark class archive (Spark's JVMs start without it): $(VENV)/spark-classes.log"; }; \
	fi

# Re-pin after editing pyproject.toml dependencies.
lock: $(VENV)/bin/uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 $(foreach d,$(FIND_LINKS),--find-links $(d)) -o requirements.lock

# One pipeline run per checkout: a second `make run` (or run-preset) is refused before it touches
# anything (DVC's own lock would refuse its repro, but restore-outputs would then rewrite the
# outputs the first run is writing). flock exits RUN_BUSY when the lock is held. A stage command
# run by hand (`nextbuy train`) takes the same lock (nextbuy.procs.pipeline_lock); the run's own
# stage commands are told it is theirs (NEXTBUY_RUN_LOCK_HELD). flock -o: flock itself holds the
# lock while the run lasts and the run's processes do not inherit it, so a process the run leaves
# behind (a detached daemon) cannot keep the next run out.
RUN_LOCK := .dvc/tmp/make-run.lock
RUN_BUSY := 75
define exclusive
@mkdir -p $(dir $(RUN_LOCK))
@NEXTBUY_RUN_LOCK_HELD=1 flock -n -o -E $(RUN_BUSY) $(RUN_LOCK) bash -c '$(1)' || { status=$$?; \
  if [ $$status = $(RUN_BUSY) ]; then echo "another make run or run-preset is running in this checkout ($(RUN_LOCK)): nothing was touched; wait for it"; fi; \
  exit $$status; }
endef

run: $(STAMP)
	@git rev-parse --git-dir >/dev/null 2>&1 || { echo "make run needs a git checkout (DVC tracks the pipeline in git)"; exit 1; }
	@# DVC deletes a stage's outputs before it checks params: put the last good ones back on failure.
	@# First a DVC lock file a killed dvc left unreadable is set aside (nextbuy check-dvc-lock).
	$(call exclusive,nextbuy check-dvc-lock && dvc repro || { status=$$?; nextbuy restore-outputs; exit $$status; })
	@nextbuy summary

# A preset of presets/ over params.yaml as a DVC experiment (params.yaml keeps its values
# afterwards: `git checkout params.yaml` to go back), e.g.
#   make run-preset PRESET=presets/large-store-100k.yaml
run-preset: $(STAMP)
	@test -n "$(PRESET)" || { echo "usage: make run-preset PRESET=presets/<name>.yaml"; exit 2; }
	$(call exclusive,flags="$$(nextbuy preset $(PRESET))" && nextbuy check-dvc-lock && dvc exp run $$flags || { status=$$?; nextbuy restore-outputs; exit $$status; })
	@nextbuy summary

summary: $(STAMP)
	@nextbuy summary

# Whole files to each worker, in the order tests/conftest.py sorts them (long files first);
# xdist would otherwise hand them out by number of tests, the long end-to-end files last.
# The suite starts hundreds of Python processes: they keep the bytecode they compile (and pytest
# its rewritten test modules) even where the environment says not to write it.
test: $(STAMP)
	PYTHONDONTWRITEBYTECODE= pytest -q -n auto --dist loadfile --no-loadscope-reorder -m "not slow and not bench"

# The end-to-end tests (marked slow: whole pipelines, the Airflow scheduler, Spark sessions
# and the standalone cluster, servers under load): about 10 minutes on 2 cores; CI runs them.
test-e2e: $(STAMP)
	PYTHONDONTWRITEBYTECODE= pytest -q -n auto --dist loadfile --no-loadscope-reorder -m "slow and not bench"

# Every `nextbuy bench <name>` end to end at its smallest size (tests/bench/test_end_to_end.py
# says which test runs which): minutes, so apart from make test; CI runs both.
test-benches: $(STAMP)
	PYTHONDONTWRITEBYTECODE= pytest -q -n auto --dist loadfile --no-loadscope-reorder -m bench

# The docker compose stack for real (needs a prepared host: docker/prepare-host.sh): build,
# up, train on Celery, champion in MLflow, monitoring in Evidently, 2 workers, down -v.
# docker/stack_check.py says what each step checks; without a registry first run
# `bash docker/base-images/build.sh` (Debian-built base images).
# Every committed benchmark result recorded again with its own command, one at a time, then the
# results page rendered: hours (the plan and its expected time print first). A quiet machine only.
results: $(STAMP)
	$(BIN)/nextbuy bench record-all

stack-check: $(STAMP)
	$(BIN)/python docker/stack_check.py

# ruff and mypy (settings in pyproject.toml): lint, formatting and types must be clean; `make format` fixes what it can.
lint: $(STAMP)
	ruff check .
	ruff format --check .
	mypy src

format: $(STAMP)
	ruff check --fix .
	ruff format .

# MLflow UI on 127.0.0.1:5000, one process (no job runners, gateway or telemetry): prints the
# classic ML view of the nextbuy experiment; Ctrl-C stops its whole process group.
# Stopping it (Ctrl-C, SIGTERM to make's process group, even SIGKILL) stops its server too.
MLFLOW_UI_PORT ?= 5000
mlflow-ui: $(STAMP)
	@nextbuy port-free $(MLFLOW_UI_PORT) --setting "make mlflow-ui MLFLOW_UI_PORT=<port>"
	nextbuy mlflow-ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --port $(MLFLOW_UI_PORT)

# REST scoring of the champion on 127.0.0.1:5001 (POST /invocations): MLflow's scoring server,
# files checked against the recorded SHA-256 first, bodies over NEXTBUY_MAX_BODY_BYTES (10 MB) refused.
SERVE_PORT ?= 5001
serve: $(STAMP)
	@nextbuy port-free $(SERVE_PORT) --setting "make serve SERVE_PORT=<port>"
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db nextbuy serve --port $(SERVE_PORT)

# On-call dashboards: Evidently UI over the workspace the monitor stage fills (monitoring/README.md, docs/operations/on-call.md).
DASHBOARDS_PORT ?= 8000
dashboards: $(STAMP)
	@nextbuy port-free $(DASHBOARDS_PORT) --setting "make dashboards DASHBOARDS_PORT=<port>"
	@echo "Evidently UI: http://127.0.0.1:$(DASHBOARDS_PORT)  (workspace monitoring/workspace; Ctrl-C stops it)"
	$(BIN)/python -m nextbuy.mlops.dashboards.ui --workspace monitoring/workspace --port $(DASHBOARDS_PORT)

# Airflow 3 standalone (SQLite in .airflow/, this project's dags/, 127.0.0.1:8080, pool nextbuy_dvc):
# prints the URL and the admin login; Ctrl-C stops its whole process group.
airflow: $(STAMP)
	nextbuy airflow standalone

# dvc.yaml's top-level plots into dvc_plots/index.html, Vega inlined: it renders offline.
plots: $(STAMP)
	nextbuy plots

# The documentation site (mkdocs.yml, docs/): served on 127.0.0.1:8001, rebuilt on every edit.
# Reference pages: `nextbuy docs-reference`; benchmark results: `nextbuy bench report`.
DOCS_PORT ?= 8001
docs: $(STAMP)
	@nextbuy port-free $(DOCS_PORT) --setting "make docs DOCS_PORT=<port>"
	mkdocs serve -a 127.0.0.1:$(DOCS_PORT)

# What CI runs: a broken link or a missing page fails the build (site/ is git-ignored).
docs-build: $(STAMP)
	mkdocs build --strict

clean:
	rm -rf data models metrics plots dvc_plots mlflow.db mlartifacts dvc.lock
