#!/usr/bin/env bash
# The stateful schemathesis test (test_api_workflows_conform_to_its_openapi_document) run N times,
# each in its own pytest process with its own Hypothesis seed: FIRST, FIRST+1, ... (issue 11: it
# must pass 50 runs in a row with varied seeds). Needs DATABASE_URL (a superuser) and .venv.
# Usage: bash bench/stateful_seeds.sh [N=50] [FIRST=1001]
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-50}"
first="${2:-1001}"
logs="bench/results/stateful-seeds-$(date +%Y%m%dT%H%M%S)"
mkdir -p "$logs"
passed=0
failed=0
for seed in $(seq "$first" $((first + runs - 1))); do
    start=$SECONDS
    if .venv/bin/pytest tests/api/test_schemathesis.py -k workflows -q -p no:randomly \
        -p no:cacheprovider --hypothesis-seed="$seed" >"$logs/seed-$seed.log" 2>&1; then
        passed=$((passed + 1))
        echo "seed $seed passed in $((SECONDS - start)) s"
    else
        failed=$((failed + 1))
        echo "seed $seed FAILED in $((SECONDS - start)) s (see $logs/seed-$seed.log)"
    fi
done
echo "stateful-seeds: $passed passed, $failed failed (seeds $first..$((first + runs - 1)))"
[[ "$failed" == 0 ]]
