#!/usr/bin/env bash
# Development aid while tables are still in flux: regenerate migration 0004 (every table change
# since 0003) from the models by autogenerate against a scratch database. Custom SQL never goes in
# 0004; it is rewritten each time.
set -euo pipefail
cd "$(dirname "$0")/.."
server="${SCRATCH_SERVER:-postgresql://postgres@127.0.0.1:5432}"
db="scratch_regen_$$"
psql -q "$server/postgres" -c "CREATE DATABASE $db"
trap 'psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
export DATABASE_URL="$server/$db"
rm -f alembic/versions/*_0004_*.py
.venv/bin/alembic upgrade 0003 >/dev/null 2>&1
.venv/bin/alembic revision --autogenerate -m "case events and later changes" --rev-id 0004 2>&1 | tail -1
f=$(ls alembic/versions/*_0004_*.py)
mv "$f" alembic/versions/20261123_0004_case_events.py
.venv/bin/alembic upgrade head >/dev/null
.venv/bin/alembic check
