#!/usr/bin/env bash
# `make bench-docs-offline`: do /docs (Swagger UI) and /redoc render with no network beyond
# loopback? The service and headless Chromium run in a network namespace of their own that has
# only `lo` (unshare --net, as root), so nothing but this service can be reached; Chromium is also
# told to resolve no other host. Each page passes when its rendered DOM lists the API's
# operations. Screenshots and DOMs go to bench/results/.
#
# Needs Debian's chromium (installed here when missing, as root) and the project's .venv. The
# service uses its own embedded PostgreSQL in a temporary folder (a unix socket, reachable from
# the namespace), stopped and deleted at the end.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
RESULTS="$ROOT/bench/results"
PORT="${DOCS_PORT:-8391}"
STAMP="$(date +%Y%m%dT%H%M%S)"

if [[ "${1:-}" != "--inside" ]]; then
    if ! command -v chromium >/dev/null 2>&1; then
        echo "docs-offline: installing Debian's chromium"
        apt-get update -q && apt-get install -y -q chromium >/dev/null
    fi
    mkdir -p "$RESULTS"
    if [[ "$(id -u)" == 0 ]] && unshare --net true 2>/dev/null; then
        echo "docs-offline: in a network namespace with loopback only"
        exec unshare --net bash -c 'ip link set lo up && exec bash "$0" --inside' "$0"
    fi
    echo "docs-offline: no network namespace here (not root?): Chromium's host rules only" >&2
fi

WORK="$(mktemp -d /tmp/ngdocs.XXXXXX)"
export NEGLECT_EMBEDDED_PGDATA="$WORK/pg"
export NEGLECT_KEY_ENCRYPTION_KEY="$(.venv/bin/python -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
unset DATABASE_URL NEGLECT_DATABASE_URL
SERVICE_PID=""

cleanup() {
    if [[ -n "$SERVICE_PID" ]]; then kill "$SERVICE_PID" 2>/dev/null || true; wait "$SERVICE_PID" 2>/dev/null || true; fi
    .venv/bin/neglect-service db stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

.venv/bin/neglect-service dev --port "$PORT" >"$WORK/service.log" 2>&1 &
SERVICE_PID=$!
for _ in $(seq 1 300); do
    if .venv/bin/python -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$PORT/health/live', timeout=1)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$SERVICE_PID" 2>/dev/null; then cat "$WORK/service.log" >&2; exit 1; fi
    sleep 0.3
done

# No other host resolves, and the browser's own background traffic is off.
CHROMIUM=(chromium --headless=new --no-sandbox --disable-gpu --disable-background-networking
    --disable-component-update --no-first-run --disable-sync --disable-extensions
    --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    --user-data-dir="$WORK/chromium" --virtual-time-budget=20000 --window-size=1280,1600)

status=0
check() {
    local page="$1" expect="$2"
    local dom="$RESULTS/docs-offline-${page}-$STAMP.html" shot="$RESULTS/docs-offline-${page}-$STAMP.png"
    "${CHROMIUM[@]}" --dump-dom "http://127.0.0.1:$PORT/$page" >"$dom" 2>"$WORK/chromium-$page.log" || true
    "${CHROMIUM[@]}" --screenshot="$shot" "http://127.0.0.1:$PORT/$page" >/dev/null 2>&1 || true
    local operations
    operations="$( (grep -o "$expect" "$dom" || true) | wc -l)"
    if [[ "$operations" -ge 10 ]] && grep -q '/v1/referrals' "$dom"; then
        echo "docs-offline: /$page rendered ($operations operations listed; $shot)"
    else
        echo "docs-offline: /$page did NOT render (found $operations operations; see $dom)" >&2
        status=1
    fi
}
# Swagger UI draws one `opblock-summary-path` per operation; ReDoc one `http-verb` label.
check docs 'class="opblock-summary-path"'
check redoc 'http-verb '
exit "$status"
