# One entry point for every command. `make` alone lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Every dependency pinned with its hashes, for Python 3.11 on Linux x86_64: the service's own
# (what the image installs) and, as a superset, its dev tools (what `make venv` installs).
# `make lock` writes both from pyproject.toml.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
# pip installs again only when the lock or pyproject.toml is newer than this file.
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

.PHONY: help venv lock pgbouncer wrk run test pytest test-pgbouncer lint typecheck openapi bench bench-indicators bench-demo bench-feed bench-census bench-token-timing bench-docs-offline bench-webhooks bench-writes drill-webhooks clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Exactly the locked versions, each checked against its hash, and nothing resolved here: first
# the locked build backend (setuptools), then everything, so that a package published only as
# source (sly) is built with that backend, not one fetched unpinned for an isolated build; then
# the project itself, editable. pip names each package as it fetches it.
$(STAMP): $(DEV_LOCK) pyproject.toml | $(BIN)/python
	@echo "venv: installing the $$(grep -c '^[a-zA-Z0-9]' $(DEV_LOCK)) packages pinned in $(DEV_LOCK) (a few minutes the first time)"
	awk '/^setuptools==/{p=1} p{print} p&&!/\\$$/{exit}' $(DEV_LOCK) > $(VENV)/build-backend.lock
	$(BIN)/python -m pip install --require-hashes --no-deps --only-binary :all: -r $(VENV)/build-backend.lock
	$(BIN)/python -m pip install --require-hashes --no-deps --no-build-isolation --progress-bar on -r $(DEV_LOCK)
	@echo "venv: installing neglect-service itself (editable)"
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@
	@echo "venv: ready"

venv: $(STAMP) ## Create .venv with exactly the versions in requirements-dev.lock

# The lock covers the target platform whatever machine runs this: CPython 3.11, Linux x86_64.
# setuptools (the build backend) is pinned too, so the project builds offline from the lock.
# Pins already in the files are kept unless they no longer fit; `make lock LOCK_ARGS=--upgrade`
# moves everything to the newest versions allowed.
LOCK_ARGS ?=
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-unknown-linux-gnu --custom-compile-command 'make lock' $(LOCK_ARGS)

lock: venv ## Re-pin every dependency (after editing pyproject.toml); commit both lock files
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet 'uv>=0.9'
	echo 'setuptools>=69' | $(UV_COMPILE) pyproject.toml - -o $(LOCK)
	echo 'setuptools>=69' | $(UV_COMPILE) pyproject.toml - --extra dev -c $(LOCK) -o $(DEV_LOCK)
	@echo "lock: $$(grep -c '^[a-zA-Z0-9]' $(LOCK)) service and $$(grep -c '^[a-zA-Z0-9]' $(DEV_LOCK)) development packages pinned; 'make venv' installs them"

# The tests run a real PgBouncer (Debian's package); installed here when missing, with sudo
# unless root. The package may also start a system PgBouncer on :6432; the tests use their own.
pgbouncer: ## Install PgBouncer (apt-get) if it is missing
	@if ! command -v pgbouncer >/dev/null 2>&1 && [[ ! -x /usr/sbin/pgbouncer ]]; then \
		sudo=$$([[ $$(id -u) -eq 0 ]] || echo sudo); \
		echo "installing pgbouncer with $${sudo:-root} apt-get"; \
		$$sudo apt-get install -y -q pgbouncer \
			|| { $$sudo apt-get update -q && $$sudo apt-get install -y -q pgbouncer; }; \
	fi

run: venv ## Serve on :8000 or PORT=N (embedded PostgreSQL unless DATABASE_URL is set) with a demo client
	$(BIN)/neglect-service dev --port $(PORT) $(RUN_ARGS)

test: lint typecheck pgbouncer ## Lint, type-check, then the whole suite (DATABASE_URL or embedded server)
	$(PYTEST)

pytest: venv pgbouncer ## Only the test suite; pass options with PYTEST_ARGS='-k name'
	$(PYTEST)

test-pgbouncer: venv pgbouncer ## The referral, assessment, case-event and indicator suites through PgBouncer
	NEGLECT_TEST_THROUGH_PGBOUNCER=1 $(PYTEST) tests/api/test_referral*.py \
		tests/api/test_assessments.py tests/api/test_case_events.py tests/api/test_indicators*.py

lint: venv ## ruff check, ruff format --check and the import-linter layer contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv ## mypy --strict (configured in pyproject.toml) over the whole tree
	$(BIN)/mypy $(MYPY_PATHS)

openapi: venv ## Regenerate openapi.yaml from the app (no database needed)
	$(BIN)/python -m api.openapi_export

bench: venv wrk ## Run the benchmarks in bench/ (bench/run.sh)
	@if [[ -f bench/run.sh ]]; then bash bench/run.sh; else echo "bench/run.sh does not exist yet"; fi

bench-indicators: venv ## Every indicator over 36 months at 1,000,000 referrals, against count(*)
	bash bench/indicators.sh

bench-demo: venv ## Load the demo data (1,000,000 referrals) into a fresh database; referrals/s, CPU/referral
	$(BIN)/python -m bench.demo_load $(BENCH_ARGS)

bench-feed: venv ## The OData feed's full pull against the JSON API, 36 months at 1,000,000 referrals
	bash bench/feed.sh $(BENCH_ARGS)

bench-census: venv ## Import a generated CIN census file of 100,000 children; prints children/s
	$(BIN)/python -m bench.census_import $(BENCH_ARGS)

bench-token-timing: venv ## Unknown, disabled and wrong-secret clients at /oauth/token: same time?
	$(BIN)/python -m bench.token_timing

wrk: ## Install wrk (apt-get) if it is missing: the HTTP load of make bench and make bench-webhooks
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk" >&2; \
		apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }; }

bench-webhooks: venv wrk ## Referral create with and without the webhook outbox (HTTP, in process); two workers' events/s
	$(BIN)/python -m bench.webhooks $(BENCH_ARGS)

bench-writes: venv wrk ## Referral create and case-event batch: before issue 16 against now, alternating rounds
	$(BIN)/python -m bench.writes_ab $(BENCH_ARGS)

drill-webhooks: venv ## SIGKILL a webhook worker and restart a private PostgreSQL during 500 decisions
	$(BIN)/python -m bench.webhook_drill $(BENCH_ARGS)

bench-docs-offline: venv ## /docs and /redoc in headless Chromium, no network beyond loopback
	bash bench/docs_offline.sh

# `db stop` stops the server whatever ended the processes that used it, and exits non-zero if it
# is still running: then nothing is deleted.
clean: ## Stop the embedded PostgreSQL and delete its data folder
	@if [[ -f "$(PGDATA)/postmaster.pid" ]]; then \
		if [[ ! -x $(BIN)/neglect-service ]]; then $(MAKE) -s --no-print-directory venv; fi; \
		NEGLECT_EMBEDDED_PGDATA="$(PGDATA)" $(BIN)/neglect-service db stop; fi
	rm -rf -- "$(PGDATA)"
