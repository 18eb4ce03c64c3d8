#!/usr/bin/env bash
# OData feed benchmark: the full pull of every indicator point over 36 months against the same
# series through the JSON API, at 1,000,000 referrals. See bench/feed_bench.py for the options
# (--referrals N, --keep, --database-url URL, --runs N, --page-size N). Exits 1 past twice.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m bench.feed_bench "$@"
