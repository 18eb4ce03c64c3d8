#!/usr/bin/env bash
# Indicator benchmark: every indicator's 36-month series over 1,000,000 referrals against a plain
# count(*) over the referral table in the same run. See bench/indicators_bench.py for the options
# (--breakdowns, --keep, --database-url URL, --referrals N, --runs N). Exits 1 when a series FAILs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m bench.indicators_bench "$@"
