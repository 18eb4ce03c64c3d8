"""Does `/oauth/token` take as long for an unknown client id as for a registered one?

Serves the app with uvicorn on 127.0.0.1 (one worker, a fresh database, the failed-request limits
raised out of the way), then sends token requests for three kinds of failing client, interleaved
in a shuffled order so that a drift of the machine's speed falls on every kind alike:

- unknown:      a client id nobody registered;
- disabled:     a registered client, disabled, with its right secret;
- wrong-secret: a registered, enabled client with a wrong secret of the same length.

Each must answer 401. It prints each kind's median, p10 and p90 and passes when every median is
within `--tolerance` (20%) of the smallest. Successful requests are timed afterwards, for scale.

    .venv/bin/python -m bench.token_timing [--requests 50] [--warmup 5] [--tolerance 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    create_database,
    drop_database,
    find_server_url,
    free_port,
    wait_until_ready,
)
from service.auth.clients import create_client, disable_client
from service.db import create_engine, create_session_factory, transaction
from service.migrations import migrate_database
from service.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT_ROOT / "bench" / "results"
KINDS = ("unknown", "disabled", "wrong-secret")
RAISED_LIMIT = "1000000"


async def _register(url: str) -> dict[str, tuple[str, str]]:
    """Credentials for each kind (and `ok`, a client whose request succeeds)."""
    engine = create_engine(Settings(database_url=url), url)
    factory = create_session_factory(engine)
    try:
        made = {}
        async with transaction(factory) as session:
            for name in ("disabled", "wrong-secret", "ok"):
                created = await create_client(
                    session,
                    name=f"Timing {name}",
                    agency_type="school",
                    agency_name="Sampletown Primary School",
                    scopes=["referrals:write"],
                )
                made[name] = (created.client.client_id, created.secret or "")
            await disable_client(session, made["disabled"][0])
    finally:
        await engine.dispose()
    wrong_id, right = made["wrong-secret"]
    unknown_id = f"nsc_{secrets.token_hex(10)}"  # the shape of a real id
    return {
        "unknown": (unknown_id, secrets.token_urlsafe(32)),
        "disabled": made["disabled"],
        "wrong-secret": (wrong_id, secrets.token_urlsafe(32)[: len(right)]),
        "ok": made["ok"],
    }


def _timed(http: httpx.Client, client_id: str, secret: str, expected: int) -> float:
    started = time.perf_counter()
    response = http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != expected:
        raise SystemExit(f"expected {expected}, got {response.status_code}: {response.text[:300]}")
    return elapsed_ms


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(args: argparse.Namespace) -> int:
    server_url = find_server_url()
    name = f"ns_timing_{int(time.time())}_{os.getpid()}"
    url = asyncio.run(create_database(server_url, name))
    server: subprocess.Popen[bytes] | None = None
    try:
        migrate_database(url)
        credentials = asyncio.run(_register(url))
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "NEGLECT_LOG_LEVEL": "WARNING",
            # Out of the way: this measures the work of a failure, not the limiter's refusals.
            "NEGLECT_TOKEN_FAILURES_PER_CLIENT": RAISED_LIMIT,
            "NEGLECT_TOKEN_FAILURES_PER_ADDRESS": RAISED_LIMIT,
        }
        command = [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        server = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
        )
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{base_url}/health/ready", server.pid, 60)
        timings = _measure(base_url, credentials, args.requests, args.warmup, args.seed)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        asyncio.run(drop_database(server_url, name))
    return _report(timings, args)


def _measure(
    base_url: str,
    credentials: dict[str, tuple[str, str]],
    requests: int,
    warmup: int,
    seed: int,
) -> dict[str, list[float]]:
    order = random.Random(seed)
    kinds = list(KINDS)
    timings: dict[str, list[float]] = {kind: [] for kind in [*kinds, "ok"]}
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for round_number in range(warmup + requests):
            order.shuffle(kinds)
            for kind in kinds:
                client_id, secret = credentials[kind]
                elapsed = _timed(http, client_id, secret, 401)
                if round_number >= warmup:
                    timings[kind].append(elapsed)
        # Afterwards, not among them: a success signs a token, and that work could spill into
        # the time of the request that follows it.
        client_id, secret = credentials["ok"]
        timings["ok"] = [_timed(http, client_id, secret, 200) for _ in range(requests)]
    return timings


def _report(timings: dict[str, list[float]], args: argparse.Namespace) -> int:
    medians = {kind: statistics.median(timings[kind]) for kind in KINDS}
    fastest = min(medians.values())
    spread = max(medians.values()) / fastest - 1
    passed = spread <= args.tolerance
    lines = [
        f"token timing: {args.requests} requests per kind after {args.warmup} warm-up rounds, "
        "shuffled, one uvicorn worker on 127.0.0.1",
        f"{'kind':<14}{'median ms':>10}{'p10 ms':>9}{'p90 ms':>9}{'vs fastest':>12}",
    ]
    for kind in [*KINDS, "ok"]:
        values = timings[kind]
        median = statistics.median(values)
        lines.append(
            f"{kind:<14}{median:>10.1f}{_percentile(values, 0.1):>9.1f}"
            f"{_percentile(values, 0.9):>9.1f}{median / fastest - 1:>+12.1%}"
        )
    lines.append(
        f"spread of the failing kinds' medians: {spread:.1%} "
        f"(limit {args.tolerance:.0%}): {'PASS' if passed else 'FAIL'}"
    )
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result: dict[str, Any] = {
        "requests": args.requests,
        "warmup": args.warmup,
        "tolerance": args.tolerance,
        "medians_ms": {kind: statistics.median(timings[kind]) for kind in timings},
        "spread": spread,
        "passed": passed,
        "timings_ms": timings,
    }
    (RESULTS / f"token-timing-{stamp}.json").write_text(json.dumps(result, indent=2))
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.token_timing", description=__doc__)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per kind")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument("--tolerance", type=float, default=0.20, help="allowed spread of medians")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled order")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
