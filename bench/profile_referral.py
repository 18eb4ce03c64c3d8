"""Where one `POST /v1/referrals` spends its time: CPU per request, statements, a profile.

Run: `.venv/bin/python -m bench.profile_referral [--requests 300]` from the project root. It makes
its own database (like bench/run.sh), drives the app in process over httpx's ASGI transport, one
request at a time, and prints:

- the app's CPU milliseconds per request (`time.process_time`, so waiting on PostgreSQL and other
  processes' load are left out) and the wall milliseconds, for the service and for the ceiling's
  single INSERT done the same way;
- the CPU per request of each step of the create path (functions wrapped by name; the steps of
  `create_referral` are nested inside it), and a GET /health/live baseline for what every
  request costs (the in-process client, middleware, logging);
- the SQL statements one request sends, from SQLAlchemy's engine events and at the driver;
- the functions with the most cumulative time under cProfile, grouped by area.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import inspect
import io
import json
import logging
import os
import pstats
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from sqlalchemy import event

from bench.crash_drill import BodyMaker, _service_command
from bench.harness import create_database, drop_database, find_server_url


async def _measure(send: Callable[[], Awaitable[None]], count: int) -> tuple[float, float]:
    """Mean (CPU ms, wall ms) per call of `send`."""
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    for _ in range(count):
        await send()
    cpu = (time.process_time() - cpu_started) * 1000 / count
    wall = (time.perf_counter() - wall_started) * 1000 / count
    return cpu, wall


STEPS: tuple[tuple[str, str, str], ...] = (
    ("service.auth.tokens", "TokenVerifier.verify", "authenticate: the JWT (remembered)"),
    ("service.referrals", "body_fingerprint", "idempotency: fingerprint the body"),
    ("service.referrals", "create_referral", "create_referral (service), in all"),
    ("asyncpg.connection", "Connection.fetchrow", "  of which: the function call"),
)
"""(module, attribute, label): what `_wrap_steps` times. Names are patched where they are
looked up at call time (the importing module, or the class for methods); a name the code no
longer has is left out of the table."""


def _timed(original: Any, label: str, spent: defaultdict[str, float]) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        result = original(*args, **kwargs)
        if not inspect.isawaitable(result):
            spent[label] += time.process_time() - started
            return result

        async def finish() -> Any:
            try:
                return await result
            finally:
                spent[label] += time.process_time() - started

        return finish()

    return timed


def _wrap_steps(spent: defaultdict[str, float]) -> Callable[[], None]:
    """Time each step in STEPS by CPU; returns a function that puts the originals back.

    Requests go one at a time, so the process's CPU time between a step's start and end is that
    step's own (waiting on PostgreSQL costs no CPU).
    """
    undo: list[tuple[Any, str, Any]] = []
    for module_name, attribute, label in STEPS:
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, name, None)
        if original is None:
            continue
        setattr(owner, name, _timed(original, label, spent))
        undo.append((owner, name, original))

    def restore() -> None:
        for owner, name, original in reversed(undo):
            setattr(owner, name, original)

    return restore


def _area(filename: str, function: str) -> str:
    if filename == "~" and ("poll" in function or "select" in function):
        return "waiting in epoll (not CPU)"
    for marker, area in (
        ("/sqlalchemy/", "sqlalchemy"),
        ("/asyncpg/", "asyncpg"),
        ("/pydantic", "pydantic"),
        ("/fastapi/", "fastapi"),
        ("/starlette/", "starlette"),
        ("/jose/", "jose (JWT)"),
        ("/cryptography/", "cryptography"),
        ("/httpx/", "httpx (the client)"),
        ("/httpcore/", "httpx (the client)"),
        ("/orjson", "orjson"),
        ("/json/", "json (stdlib)"),
        ("/asyncio/", "asyncio"),
        ("/greenlet", "greenlet"),
        ("/service/", "service/"),
        ("/api/", "api/"),
        ("/schemas/", "schemas/"),
    ):
        if marker in filename:
            return area
    return "other"


def _profile_table(profile: cProfile.Profile, count: int, top: int) -> str:
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    by_area: Counter[str] = Counter()
    for (filename, _, function), (_, _, own, _, _) in raw.items():
        by_area[_area(filename, function)] += own
    total = sum(by_area.values())
    lines = [f"own time by area (cProfile, {total * 1000 / count:.2f} ms/request profiled):"]
    lines += [
        f"  {share / total:6.1%}  {area}" for area, share in by_area.most_common() if share > 0
    ]
    own = sorted(raw.items(), key=lambda item: -item[1][2])[:15]
    lines.append("most own time:")
    lines += [
        f"  {stat[2] * 1000 / count:6.3f} ms  {function} ({filename.rsplit('/', 2)[-1]}:{line})"
        for (filename, line, function), stat in own
    ]
    buffer = io.StringIO()
    pstats.Stats(profile, stream=buffer).sort_stats("cumulative").print_stats(top)
    interesting = [
        line
        for line in buffer.getvalue().splitlines()
        if any(part in line for part in ("/service/", "/api/", "/schemas/", "sqlalchemy", "jose"))
    ]
    lines.append(f"cumulative, project and library entry points (top {top}, seconds for all):")
    lines += [f"  {line.strip()[:150]}" for line in interesting]
    return "\n".join(lines)


async def run(args: argparse.Namespace, server: str) -> None:
    name = f"ns_profile_{datetime.now(UTC).strftime('%H%M%S')}_{os.getpid()}"
    url = await create_database(server, name)
    try:
        env = {**os.environ, "DATABASE_URL": url}
        command = _service_command()
        subprocess.run([*command, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        created = subprocess.run(
            [
                *command,
                "clients",
                "create",
                "--json",
                "--name",
                "Profile client",
                "--agency-type",
                "school",
                "--agency-name",
                "Sampletown Primary School",
                "--scopes",
                "referrals:write",
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        await profile_app(url, json.loads(created), args)
    finally:
        await drop_database(server, name)


async def profile_app(url: str, client: dict[str, str], args: argparse.Namespace) -> None:
    os.environ["DATABASE_URL"] = url
    from api.main import create_app
    from service.settings import get_settings

    get_settings.cache_clear()
    app = create_app()
    # The app's logging setup makes httpx log every request of the in-process client.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    bodies = BodyMaker("profile")
    statements: Counter[str] = Counter()
    async with app.router.lifespan_context(app):
        sync_engine = app.state.engine.sync_engine

        @event.listens_for(sync_engine, "before_cursor_execute")
        def count_statement(*event_args: Any) -> None:
            sql = " ".join(str(event_args[2]).split())
            statements[sql[:90]] += 1

        # The create path runs on the plain asyncpg pool, which has no engine events: count the
        # statements it sends at the driver (a private method, for this measurement only).
        driver_execute = asyncpg.Connection._execute

        async def count_driver_statement(
            self: asyncpg.Connection, query: str, *rest: Any, **options: Any
        ) -> Any:
            statements["(driver) " + " ".join(query.split())[:80]] += 1
            return await driver_execute(self, query, *rest, **options)

        asyncpg.Connection._execute = count_driver_statement

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            token_answer = await http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(client["client_id"], client["client_secret"]),
            )
            token_answer.raise_for_status()
            headers = {
                "Authorization": f"Bearer {token_answer.json()['access_token']}",
                "Content-Type": "application/json",
            }

            async def send() -> None:
                key, _, body = bodies.make()
                response = await http.post(
                    "/v1/referrals", content=body, headers={**headers, "Idempotency-Key": key}
                )
                if response.status_code != 201:
                    raise SystemExit(f"HTTP {response.status_code}: {response.text[:300]}")

            await _measure(send, args.warmup)
            statements.clear()
            service_cpu, service_wall = await _measure(send, args.requests)
            per_request = {sql: count / args.requests for sql, count in statements.items()}

            async def probe() -> None:
                (await http.get("/health/live")).raise_for_status()

            await _measure(probe, args.warmup)
            baseline_cpu, _ = await _measure(probe, args.requests)

            spent: defaultdict[str, float] = defaultdict(float)
            restore = _wrap_steps(spent)
            try:
                stepped_cpu, _ = await _measure(send, args.requests)
            finally:
                restore()

            profile = cProfile.Profile()
            profile.enable()
            await _measure(send, args.requests)
            profile.disable()

    ceiling_cpu, ceiling_wall = await _measure_ceiling(url, bodies, args)
    print(f"\nPOST /v1/referrals in process, one at a time, {args.requests} requests")
    print(f"  service: {service_cpu:.2f} ms CPU, {service_wall:.2f} ms wall per request")
    print(f"  ceiling: {ceiling_cpu:.2f} ms CPU, {ceiling_wall:.2f} ms wall per request")
    print(f"  (the in-process client's own CPU is in both; ceiling = {_CEILING_NOTE})")
    print(f"CPU ms per request by step (a run with the steps timed: {stepped_cpu:.2f} ms in all)")
    print(f"  {baseline_cpu:6.2f}  any request: GET /health/live (client, middleware, logging)")
    for _, _, label in STEPS:
        if label in spent:
            print(f"  {spent[label] * 1000 / args.requests:6.2f}  {label}")
    outside = (
        stepped_cpu
        - baseline_cpu
        - sum(spent[label] for _, _, label in STEPS if not label.startswith("  "))
        * 1000
        / args.requests
    )
    print(f"  {outside:6.2f}  the rest: body parsing and validation, dependencies, response")
    print(f"statements per request: {sum(per_request.values()):.1f}")
    for sql, count in sorted(per_request.items(), key=lambda item: -item[1]):
        print(f"  {count:4.1f}  {sql}")
    print("  (engine statements: in a transaction, + BEGIN and COMMIT; driver: autocommit)")
    print(_profile_table(profile, args.requests, args.top))


_CEILING_NOTE = "FastAPI + asyncpg app of bench/ceiling_app.py over the same transport"


async def _measure_ceiling(
    url: str, bodies: BodyMaker, args: argparse.Namespace
) -> tuple[float, float]:
    os.environ["BENCH_CEILING_DSN"] = url
    from bench.ceiling_app import app

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:

            async def send() -> None:
                _, _, body = bodies.make()
                response = await http.post(
                    "/v1/referrals", content=body, headers={"Content-Type": "application/json"}
                )
                response.raise_for_status()

            await _measure(send, args.warmup)
            return await _measure(send, args.requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_referral", description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--top", type=int, default=60)
    asyncio.run(run(parser.parse_args(argv), find_server_url()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
