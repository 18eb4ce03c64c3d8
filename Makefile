# One entry point for every command. `make` alone lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip installs again only when pyproject.toml is newer than this file.
STAMP := $(VENV)/.installed
# One process by default: on the two-core machine we measured, two xdist workers (one database
# each) were slower, not faster. `make test PYTEST_WORKERS=2` (or `auto`) where cores are idle.
PYTEST_WORKERS ?= 0
PYTEST_ARGS ?=
# Options of `neglect-service dev`, e.g. RUN_ARGS=--allow-all-scopes-demo-client.
RUN_ARGS ?=
# `make run PORT=8300`: the port served, and (unless NEGLECT_PUBLIC_URL is set) the URLs it prints.
PORT ?= 8000
PYTEST := $(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)
MYPY_PATHS := $(wildcard service api schemas tests alembic bench)
PGDATA := $(or $(NEGLECT_EMBEDDED_PGDATA),.pgdata)

.PHONY: help venv run test pytest lint typecheck openapi bench bench-indicators bench-feed bench-census bench-token-timing clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP) ## Create .venv and install the package with its dev tools

run: venv ## Serve on :8000 or PORT=N (embedded PostgreSQL unless DATABASE_URL is set) with a demo client
	$(BIN)/neglect-service dev --port $(PORT) $(RUN_ARGS)

test: lint typecheck ## Lint, type-check, then the whole suite (DATABASE_URL or embedded server)
	$(PYTEST)

pytest: venv ## Only the test suite; pass options with PYTEST_ARGS='-k name'
	$(PYTEST)

lint: venv ## ruff check, ruff format --check and the import-linter layer contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv ## mypy --strict (configured in pyproject.toml) over the whole tree
	$(BIN)/mypy $(MYPY_PATHS)

openapi: venv ## Regenerate openapi.yaml from the app (no database needed)
	$(BIN)/python -m api.openapi_export

bench: venv ## Run the benchmarks in bench/ (bench/run.sh)
	@if [[ -f bench/run.sh ]]; then bash bench/run.sh; else echo "bench/run.sh does not exist yet"; fi

bench-indicators: venv ## Every indicator over 36 months at 1,000,000 referrals, against count(*)
	bash bench/indicators.sh

bench-feed: venv ## The OData feed's full pull against the JSON API, 36 months at 1,000,000 referrals
	bash bench/feed.sh $(BENCH_ARGS)

bench-census: venv ## Import a generated CIN census file of 100,000 children; prints children/s
	$(BIN)/python -m bench.census_import $(BENCH_ARGS)

bench-token-timing: venv ## Unknown, disabled and wrong-secret clients at /oauth/token: same time?
	$(BIN)/python -m bench.token_timing

clean: ## Stop the embedded PostgreSQL and delete its data folder
	@if [[ -f "$(PGDATA)/postmaster.pid" ]]; then \
		$(MAKE) -s --no-print-directory venv && $(BIN)/neglect-service db stop; fi
	rm -rf -- "$(PGDATA)"
