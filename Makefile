# The README's two commands are `make demo` and `make test`; everything they need is installed
# here from nothing: a .venv with Airflow, the provider (editable) and the test tools.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
AIRFLOW_VERSION ?= 3.3.2
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)
# Test tools; the S3 filesystem and an S3-compatible server (storage tests); PostgreSQL drivers
# and Celery for the end-to-end tier (celery 5.7 breaks the Celery provider's result backend);
# the OpenLineage provider (optional for users: the lineage tests; unconfigured, it is off);
# statsd, Airflow's StatsD client (tests/e2e/test_metrics.py, trigger_scale's trigger-metrics).
TEST_TOOLS := pytest pytest-asyncio pytest-timeout ruff mypy types-requests \
	"apache-airflow-providers-amazon[s3fs]" "moto[server]" psycopg2-binary asyncpg \
	apache-airflow-providers-celery "celery[redis]<5.7" "apache-airflow-providers-openlineage>=2.20" statsd

.PHONY: install test lint typecheck unit e2e demo emulator clean docs package

# $(call airflow_venv,VENV,PYTHON,AIRFLOW,TOOLS): the rules that create VENV with PYTHON and
# install Airflow AIRFLOW, the provider (editable, with the emulator) and TOOLS into it, under the
# stamp VENV/.installed-AIRFLOW (another Airflow version reinstalls into the same venv). Used by
# .venv, .venv-oldest and every cell of the version matrix.
define airflow_venv
$(1)/bin/python:
	$(2) -m venv $(1)
	echo '*' > $(1)/.gitignore
	$(1)/bin/pip install --quiet --upgrade pip

$(1)/.installed-$(3): pyproject.toml Makefile | $(1)/bin/python
	$(1)/bin/pip install --quiet "apache-airflow==$(3)" -e ".[emulator]" $(4)
	rm -f $(1)/.installed-* && touch $$@
endef

$(eval $(call airflow_venv,$(VENV),$(PYTHON),$(AIRFLOW_VERSION),$(TEST_TOOLS)))

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Its junit XML lets `make test-matrix COVERED_BY_MAKE_TEST=1` (CI) count the cell it covers.
MAKE_TEST_JUNIT := $(VENV)/make-test-junit.xml
unit: install
	rm -f $(MAKE_TEST_JUNIT)
	$(BIN)/python -m pytest -q --junitxml=$(MAKE_TEST_JUNIT)

test: lint typecheck docs unit

# A real deployment (PostgreSQL, api-server, scheduler, dag-processor, triggerer) per test module.
e2e: install
	$(BIN)/python -m pytest -q -o addopts="" tests/e2e

demo: install
	$(BIN)/python dags_examples/demo.py

emulator: install
	$(BIN)/cometapi-emulator --host 127.0.0.1 --port 8765 --api-key local-dev-key

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .venv-py*-af* .airflow-local .mypy_cache .ruff_cache .pytest_cache demo-output .demo site dist

# --- Docs site and packaging (issue 8) ------------------------------------------------------
# Their tools go into .venv beside the test tools, from their own stamp so the lists stay apart.
DOCS_TOOLS := "mkdocs>=1.6,<1.7" "mkdocs-material>=9.5,<10" "mkdocstrings>=1.0,<2" "mkdocstrings-python>=2.0,<3"
PACKAGE_TOOLS := "build>=1.2,<2" "twine>=6.1,<8"
DOCS_STAMP := $(VENV)/.docs-tools-installed

$(DOCS_STAMP): $(STAMP) Makefile
	$(BIN)/pip install --quiet $(DOCS_TOOLS) $(PACKAGE_TOOLS)
	touch $@

# The site, from docs/ and the docstrings, into site/; any warning fails (strict in mkdocs.yml).
# NO_MKDOCS_2_WARNING silences mkdocs-material's banner about MkDocs 2, not our warnings.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# sdist + wheel into dist/, twine check, then the wheel installed into a clean venv: provider
# registered, emulator up, example DAGs run (scripts/package_check.py).
package: $(DOCS_STAMP)
	$(BIN)/python scripts/package_check.py

# --- Browser UI test and oldest Airflow (issue 8) -------------------------------------------
# The UI tier drives the real api-server's pages with headless Chromium: Debian's package (the
# browser download of Playwright itself is not used), Playwright's Python package in .venv.
CHROMIUM := /usr/bin/chromium
# FAB: the Images tab is tested under SimpleAuthManager and under FAB's per-DAG roles too.
UI_TOOLS := "playwright>=1.45,<2" "apache-airflow-providers-fab>=3.10,<4"
UI_STAMP := $(VENV)/.ui-tools-installed

# As root (CI is); the package lists are refreshed only when the first try finds nothing.
$(CHROMIUM):
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)

$(UI_STAMP): $(STAMP) Makefile | $(CHROMIUM)
	$(BIN)/pip install --quiet $(UI_TOOLS)
	touch $@

# The connection form, its Test button against the emulator, a task's log (tests/ui).
ui: $(UI_STAMP)
	$(BIN)/python -m pytest -q -o addopts="" -m ui tests/ui

# The screenshots of docs/img/ (docs/ui.md), taken again by the same tests.
ui-screenshots: $(UI_STAMP)
	UI_SCREENSHOTS=docs/img $(BIN)/python -m pytest -q -o addopts="" -m ui tests/ui

# The unit, docs-sample and dag.test() tiers again on the oldest Airflow that pyproject.toml
# admits, in a venv of their own.
AIRFLOW_OLDEST ?= 3.1.2
OLDEST_VENV := .venv-oldest
OLDEST_BIN := $(OLDEST_VENV)/bin
OLDEST_STAMP := $(OLDEST_VENV)/.installed-$(AIRFLOW_OLDEST)
OLDEST_TOOLS := pytest pytest-asyncio pytest-timeout "apache-airflow-providers-amazon[s3fs]" "moto[server]"

$(eval $(call airflow_venv,$(OLDEST_VENV),$(PYTHON),$(AIRFLOW_OLDEST),$(OLDEST_TOOLS)))

# The benchmark's smoke test is left out: it measures this code, not Airflow's API (and needs
# the bench tools).
MATRIX_PYTEST := -m pytest -q --ignore=tests/benchmarks
test-oldest: $(OLDEST_STAMP)
	$(OLDEST_BIN)/python $(MATRIX_PYTEST)

.PHONY: ui ui-screenshots test-oldest

# --- Benchmarks (issues 7 and 17) -------------------------------------------------------------
# `make bench`: a short run into bench-output/ (a few minutes): 1,000 predictions per watcher,
# a 1,000-input batch, and batch vs mapped at 10 prompts in a real deployment. `make bench FULL=1`:
# every benchmark at its real size, written to docs/performance.md and docs/img/: 100, 1,000 and
# 10,000 predictions and the emulator's capacity; the worker-slot deployment benchmark; 10,000
# inputs in one batch task (blocking, then deferrable); batch vs mapped at 1,000 prompts; the
# faults mid-batch (the e2e batch test, its figures collected). The deployments need PostgreSQL,
# as `make e2e` does. The page's prose is benchmarks/page/performance.md, its template.
# The unit tier runs the benchmark at tiny N, so the tools go in with the test tools.
BENCH_TOOLS := replicate==1.0.7 "matplotlib>=3.8" "pyinstrument>=4.6"
BENCH_STAMP := $(VENV)/.bench-tools-installed
BENCH_JSON := bench-output
FULL ?=
ifeq ($(FULL),1)
BENCH_OUT := docs
BENCH_SCALE := --n 100 1000 10000 --repeat 2 --watch-timeout 150 --capacity-seconds 10
BENCH_BATCH_MODES := blocking deferrable
BENCH_BATCH := --n 10000
BENCH_VS_MAPPED := --n 1000
BENCH_FULL_ONLY := deployment faults
else
BENCH_OUT := bench-output
BENCH_SCALE := --n 1000 --watchers floor trigger
BENCH_BATCH_MODES := deferrable
BENCH_BATCH := --n 1000 --trigger-n 100 --trigger-repeat 1
BENCH_VS_MAPPED := --n 10
BENCH_FULL_ONLY :=
endif
# The batch trigger against the floor is measured once, with the first mode.
BENCH_BATCH_JSON := $(foreach mode,$(BENCH_BATCH_MODES),$(BENCH_JSON)/batch_scale_$(mode).json)

.PHONY: bench

$(BENCH_STAMP): $(STAMP) Makefile
	$(BIN)/pip install --quiet $(BENCH_TOOLS)
	touch $@

unit: $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	mkdir -p $(BENCH_JSON)
	$(BIN)/python benchmarks/trigger_scale.py $(BENCH_SCALE) --json $(BENCH_JSON)/trigger_scale.json
	$(if $(filter deployment,$(BENCH_FULL_ONLY)),$(BIN)/python benchmarks/deployment_slots.py --json $(BENCH_JSON)/deployment.json)
	$(foreach mode,$(BENCH_BATCH_MODES),$(BIN)/python benchmarks/batch_scale.py $(BENCH_BATCH) --mode $(mode) \
		$(if $(filter-out $(firstword $(BENCH_BATCH_MODES)),$(mode)),--trigger-n 0) --json $(BENCH_JSON)/batch_scale_$(mode).json &&) true
	$(BIN)/python benchmarks/batch_vs_mapped.py $(BENCH_VS_MAPPED) --json $(BENCH_JSON)/batch_vs_mapped.json
	$(if $(filter faults,$(BENCH_FULL_ONLY)),$(BIN)/python benchmarks/batch_faults.py --json $(BENCH_JSON)/batch_faults.json)
	$(BIN)/python benchmarks/report.py --scale $(BENCH_JSON)/trigger_scale.json \
		$(if $(filter deployment,$(BENCH_FULL_ONLY)),--deployment $(BENCH_JSON)/deployment.json) \
		--batch-scale $(BENCH_BATCH_JSON) --batch-vs-mapped $(BENCH_JSON)/batch_vs_mapped.json \
		$(if $(filter faults,$(BENCH_FULL_ONLY)),--batch-faults $(BENCH_JSON)/batch_faults.json) \
		--out $(BENCH_OUT)/performance.md --command "make bench$(if $(filter 1,$(FULL)), FULL=1)"

# --- Version matrix and a local Airflow (issue 16) --------------------------------------------
# One cell of the matrix: the tiers of test-oldest on Python PY and Airflow AF, in a venv of its
# own, .venv-pyPY-afAF. The interpreter is python<PY> on PATH or pyenv's (scripts/version_matrix.py
# finds it; CELL_PYTHON overrides). E.g. `make test-cell PY=3.12 AF=3.3.2`.
PY ?= 3.11
AF ?= $(AIRFLOW_VERSION)
# The two cells CI had before have their venvs already: .venv (make test) and .venv-oldest.
PYTEST_ARGS ?=
# Airflow 3.2 does not bound FastAPI, and FastAPI 0.137+ (with cadwyn 9) cannot build 3.2's
# execution API (pydantic: "Model 'TITerminalStatePayload' needs a discriminator field"), so no
# dag.test() task runs. Airflow 3.3 requires fastapi<0.137; the 3.2 cells take the same bound.
CELL_PINS := $(if $(filter 3.2.%,$(AF)),"fastapi<0.137")
ifeq ($(PY)-$(AF),3.11-$(AIRFLOW_VERSION))
CELL_VENV := $(VENV)
else ifeq ($(PY)-$(AF),3.11-$(AIRFLOW_OLDEST))
CELL_VENV := $(OLDEST_VENV)
else
CELL_VENV := .venv-py$(PY)-af$(AF)
CELL_PYTHON = $(shell $(PYTHON) scripts/version_matrix.py --which-python $(PY))
$(eval $(call airflow_venv,$(CELL_VENV),$$(CELL_PYTHON),$(AF),$(OLDEST_TOOLS) $(CELL_PINS)))
endif

test-cell-install: $(CELL_VENV)/.installed-$(AF)

test-cell-venv:
	@echo $(CELL_VENV)

# Every cell runs every tier of MATRIX_PYTEST, the dag.test() tier included: on Airflow 3.2 its
# in-process execution API bug is worked around in tests/integration/conftest.py.
test-cell: test-cell-install
	$(CELL_VENV)/bin/python $(MATRIX_PYTEST) $(PYTEST_ARGS)

# The newest Airflow on every Python the package claims, and every Airflow minor (its floor, the
# newest 3.2, the newest 3.3) on Python 3.11; docs/versions.md has the table. `make test-matrix`
# runs every cell, then prints a table of the results; a failed cell fails it after the table.
# COVERED_BY_MAKE_TEST=1 (.ci/run, after `make test`): the cell 3.11 x AIRFLOW_VERSION, whose
# venv is .venv, is not run again; its row reports make test's run (MAKE_TEST_JUNIT), which ran
# the same tests and more in the same venv. Without that XML, or with a failure in it, it runs.
AIRFLOW_3_2 ?= 3.2.2
MATRIX ?= 3.11-$(AIRFLOW_VERSION) 3.12-$(AIRFLOW_VERSION) 3.13-$(AIRFLOW_VERSION) \
	3.11-$(AIRFLOW_OLDEST) 3.11-$(AIRFLOW_3_2)
COVERED_BY_MAKE_TEST ?=
test-matrix:
	$(PYTHON) scripts/version_matrix.py $(MATRIX) $(if $(filter 1,$(COVERED_BY_MAKE_TEST)),\
		--covered-by-make-test 3.11-$(AIRFLOW_VERSION) --make-test-junit $(MAKE_TEST_JUNIT))

# The emulator and a local Airflow (api-server, scheduler, dag-processor, triggerer) with the
# example DAGs, until Ctrl-C; AIRFLOW_PORT (default 8080) for the UI, COMETAPI_API_KEY for the
# real API. The metadata DB is SQLite in .airflow-local/ (AIRFLOW_LOCAL_HOME), or the URL in
# AIRFLOW__DATABASE__SQL_ALCHEMY_CONN when that is set (e.g. PostgreSQL); scripts/local_airflow.py.
AIRFLOW_PORT ?= 8080
airflow: install
	AIRFLOW_PORT=$(AIRFLOW_PORT) $(BIN)/python scripts/local_airflow.py

.PHONY: test-cell test-cell-install test-cell-venv test-matrix airflow
