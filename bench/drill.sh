#!/usr/bin/env bash
# The crash drill (bench/crash_drill.py): restart a private PostgreSQL twice while referrals are
# posted, then check that no acknowledged referral was lost and none was stored twice.
# Arguments go to the drill: `bash bench/drill.sh --senders 32 --duration 30 --keep`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then
    echo "drill: no virtual environment at .venv" >&2
    exit 2
fi
exec .venv/bin/python -m bench.crash_drill "$@"
