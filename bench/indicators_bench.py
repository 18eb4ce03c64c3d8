"""Indicator benchmark: every indicator's 36-month series over 1,000,000 referrals, timed against
a plain `SELECT count(*) FROM referral` measured in the same run.

    bash bench/indicators.sh                       # create, load, time, drop
    bash bench/indicators.sh --breakdowns          # also time every offered breakdown
    bash bench/indicators.sh --keep                # keep the database (its URL is printed)
    bash bench/indicators.sh --database-url URL    # time an already loaded database only
    bash bench/indicators.sh --database-url URL --reuse-rollup   # ... without refreshing again

Steps: pick the PostgreSQL server (`DATABASE_URL`, else 127.0.0.1:5432, else the embedded one),
create a fresh database, migrate it, load the demo partnership (`service.demo.generator`, the code
behind `neglect-service demo-data`) with enough children for the target number of referrals, then
`VACUUM (ANALYZE)` (what autovacuum would have done after such a load) and a `CHECKPOINT` (so the
load's writes are not flushed while queries are timed). The app runs in process
(httpx over ASGI, the real routes, authentication and suppression): each series is requested as a
BI tool would, `GET /v1/indicators/{id}?from=...&to=...&period=month`, without a breakdown (and
with each breakdown under `--breakdowns`). Every request and the count(*) run once to warm the
cache, then `--runs` times; the median is reported. count(*) is measured before and after the
indicators and its median over both is the yardstick.

Before timing, the indicator rollup is refreshed (`service.indicators.rollup`, what
`neglect-service worker` does after writes), so the requests time the path a BI refresh is served
by; `--live` empties the rollup instead and times the live statements. The 12-period time is taken
for every series.

Verdicts: `pass` when an indicator takes no longer than count(*), `within 3x` up to three times it,
`FAIL` beyond. The run exits 1 if any series FAILs. Results go to `bench/results/` (git-ignored)
as `indicators-<time>.json` and `.txt`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import text

from api.main import create_app
from bench.harness import find_server_url, plain_url, quote_identifier
from service.auth.clients import create_client
from service.auth.keys import issue_access_token
from service.db import create_engine, create_session_factory, transaction
from service.demo.generator import DemoGenerator, DemoOptions, DemoToolkit, load_demo_data
from service.indicators.catalogue import load_catalogue
from service.indicators.rollup import read_rollup_state, refresh_rollup
from service.migrations import migrate_database
from service.settings import Settings
from service.toolkits.definition import canonical_sha256
from service.toolkits.demo import load_demo_toolkit

RESULTS: Final = Path(__file__).resolve().parent / "results"
ISSUER: Final = "http://bench"
AUDIENCE: Final = "neglect-service"
PILOT_CHILDREN: Final = 20_000
STATEMENT_TIMEOUT_MS: Final = 600_000
COUNT_SQL: Final = "SELECT count(*) FROM referral"
WITHIN_20_PERCENT: Final = 0.8
"""Issue 16: the time for 12 periods within 20% of the time for 36."""

err = Console(stderr=True)


@dataclass
class Timing:
    indicator: str
    breakdown: str | None
    runs_ms: list[float]
    median_ms: float
    ratio: float
    verdict: str
    points: int
    median_12_ms: float | None = None
    """The median for the last 12 of the periods."""
    ratio_12_to_36: float | None = None
    cpu_ms: float | None = None
    """The median CPU time of this process (the app and the client, not PostgreSQL) a request."""
    cpu_12_ms: float | None = None


def _verdict(ratio: float) -> str:
    if ratio <= 1.0:
        return "pass"
    if ratio <= 3.0:
        return "within 3x"
    return "FAIL"


def demo_toolkit() -> DemoToolkit:
    """The demonstration toolkit as the loader publishes it."""
    definition = load_demo_toolkit()
    return DemoToolkit(definition=definition, sha256=canonical_sha256(definition))


def children_for(referrals: int, seed: int) -> tuple[int, float]:
    """Children needed for about `referrals` referrals, from a pilot run of the generator."""
    pilot = DemoGenerator(DemoOptions(children=PILOT_CHILDREN, seed=seed), demo_toolkit())
    for _ in pilot.batches():
        pass
    per_child = pilot.tally.rows["referral"] / PILOT_CHILDREN
    return max(1, round(referrals / per_child)), per_child


async def _admin(server: str, statement: str) -> None:
    connection = await asyncpg.connect(server)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def loading_progress(children: int) -> tuple[Progress, TaskID]:
    """The demo load's progress bar (on stderr) and its task, counting children."""
    progress = Progress(
        TextColumn("loading children"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )
    return progress, progress.add_task("load", total=children)


async def _load(url: str, options: DemoOptions) -> dict[str, Any]:
    engine = create_engine(Settings(database_url=url, db_statement_timeout_ms=STATEMENT_TIMEOUT_MS))
    progress, task = loading_progress(options.children)
    try:
        started = time.perf_counter()
        with progress:
            async with transaction(create_session_factory(engine)) as session:
                summary = await load_demo_data(
                    session,
                    options,
                    on_progress=lambda done: progress.update(task, completed=done),
                    on_indexing=lambda: progress.console.print("building indexes"),
                )
        loaded_s = time.perf_counter() - started
    finally:
        await engine.dispose()
    started = time.perf_counter()
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("VACUUM (ANALYZE)")
        # Write the load's dirty pages out now, not while the queries are being timed.
        try:
            await connection.execute("CHECKPOINT")
        except asyncpg.InsufficientPrivilegeError:
            err.print("no CHECKPOINT (needs a superuser or pg_checkpoint); timings may be noisier")
        sizes = await connection.fetch(
            "SELECT relname, pg_total_relation_size(oid) AS total, pg_relation_size(oid) AS heap "
            "FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace "
            "ORDER BY total DESC LIMIT 8"
        )
    finally:
        await connection.close()
    return {
        "rows": summary.rows,
        "proportions": summary.proportions,
        "load_s": round(loaded_s, 1),
        "vacuum_analyze_checkpoint_s": round(time.perf_counter() - started, 1),
        "sizes_mb": {
            row["relname"]: {
                "total": round(row["total"] / 2**20),
                "heap": round(row["heap"] / 2**20),
            }
            for row in sizes
        },
    }


async def _refresh(url: str, live: bool, reuse: bool = False) -> dict[str, Any]:
    """Refresh the indicator rollup (what the worker does after writes), so that the requests time
    the served path; with `live`, empty it instead, so that they time the live statements. With
    `reuse`, a rollup that is current is kept as it is."""
    settings = Settings(database_url=url, db_statement_timeout_ms=STATEMENT_TIMEOUT_MS)
    engine = create_engine(settings)
    factory = create_session_factory(engine)
    try:
        async with transaction(factory) as session:
            if live:
                await session.execute(text("DELETE FROM indicator_rollup"))
                return {"source": "live"}
            state = await read_rollup_state(session) if reuse else None
            if state is not None and state.current:
                cells = (
                    await session.execute(text("SELECT count(*) FROM indicator_cell"))
                ).scalar_one()
                return {
                    "source": "rollup",
                    "reused": True,
                    "refresh_s": round(state.refresh_seconds, 1),
                    "cells": cells,
                    "covered": f"{state.covered_from} to {state.covered_to}",
                }
            cpu_before = resource.getrusage(resource.RUSAGE_SELF).ru_utime
            refreshed = await refresh_rollup(
                session, helpers=factory, jobs=settings.indicator_refresh_jobs
            )
            cpu_s = resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu_before
        if refreshed is None:
            raise RuntimeError("another refresh is running")
        return {
            "source": "rollup",
            "refresh_jobs": settings.indicator_refresh_jobs,
            "refresh_s": round(refreshed.seconds, 1),
            "refresh_client_cpu_s": round(cpu_s, 1),
            "series": refreshed.series,
            "cells": refreshed.cells,
            "covered": f"{refreshed.covered_from} to {refreshed.covered_to}",
            "slowest": [[name, round(seconds, 1)] for name, seconds in refreshed.slowest],
        }
    finally:
        await engine.dispose()


async def _rollup_current(url: str) -> bool | None:
    engine = create_engine(Settings(database_url=url))
    try:
        async with transaction(create_session_factory(engine)) as session:
            state = await read_rollup_state(session)
        return None if state is None else state.current
    finally:
        await engine.dispose()


async def _median_ms(
    work: Callable[[], Awaitable[object]], runs: int, cpu: list[float] | None = None
) -> list[float]:
    """The wall times of `runs` calls of `work` after one to warm the cache; their CPU times
    (this process's) go into `cpu` when given."""
    await work()  # warm the cache; not measured
    timings = []
    for _ in range(runs):
        cpu_started = time.process_time()
        started = time.perf_counter()
        await work()
        timings.append((time.perf_counter() - started) * 1000)
        if cpu is not None:
            cpu.append((time.process_time() - cpu_started) * 1000)
    return timings


async def _time_everything(
    url: str, first: date, last: date, runs: int, breakdowns: bool
) -> tuple[list[float], list[Timing]]:
    settings = Settings(
        issuer=ISSUER,
        audience=AUDIENCE,
        database_url=None,
        db_statement_timeout_ms=STATEMENT_TIMEOUT_MS,
        log_level="WARNING",
    )
    app = create_app(settings, url)
    async with app.router.lifespan_context(app):
        factory = app.state.session_factory
        async with transaction(factory) as session:
            created = await create_client(
                session,
                name="indicator benchmark",
                agency_type="local_authority",
                agency_name="Benchmark BI",
                scopes=["indicators:read"],
            )
        ring = await app.state.key_ring()
        token = issue_access_token(
            ring,
            issuer=ISSUER,
            audience=AUDIENCE,
            client_id=created.client.client_id,
            scopes=["indicators:read"],
            ttl_s=3600,
        )
        headers = {"Authorization": f"Bearer {token}"}

        async def count() -> object:
            async with factory() as session:
                return (await session.execute(text(COUNT_SQL))).scalar_one()

        count_runs = await _median_ms(count, runs)
        transport = httpx.ASGITransport(app=app)
        series: list[tuple[str, str | None]] = [
            (meta.id, breakdown)
            for meta in load_catalogue().values()
            for breakdown in (None, *(meta.breakdowns if breakdowns else ()))
        ]
        measured: list[tuple[str, str | None, list[float], int]] = []
        measured_12: dict[tuple[str, str | None], list[float]] = {}
        cpu_used: dict[tuple[str, str | None, int], list[float]] = {}
        # The last 12 of the monthly periods: from the first day of the 11th month before the last.
        months_back = last.year * 12 + last.month - 1 - 11
        first_12 = max(first, date(months_back // 12, months_back % 12 + 1, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for indicator_id, breakdown, months in [
                *((indicator, breakdown, 36) for indicator, breakdown in series),
                *((indicator, breakdown, 12) for indicator, breakdown in series),
            ]:
                start = first if months == 36 else first_12
                params = {"from": start.isoformat(), "to": last.isoformat(), "period": "month"}
                if breakdown is not None:
                    params["breakdown"] = breakdown
                points = 0

                async def request(
                    indicator_id: str = indicator_id, params: dict[str, str] = params
                ) -> object:
                    nonlocal points
                    response = await client.get(
                        f"/v1/indicators/{indicator_id}", params=params, headers=headers
                    )
                    if response.status_code != 200:
                        raise RuntimeError(
                            f"{indicator_id}: {response.status_code} {response.text[:300]}"
                        )
                    points = len(response.json()["series"])
                    return points

                cpu = cpu_used[(indicator_id, breakdown, months)] = []
                timings = await _median_ms(request, runs, cpu)
                if months == 12:
                    measured_12[(indicator_id, breakdown)] = timings
                else:
                    measured.append((indicator_id, breakdown, timings, points))
                label = indicator_id + (f" by {breakdown}" if breakdown else "")
                err.print(
                    f"  {label} ({months} periods): {statistics.median(timings):.0f} ms, "
                    f"CPU {statistics.median(cpu):.1f} ms"
                )
        count_runs += await _median_ms(count, runs)
    yardstick = statistics.median(count_runs)

    def cpu_median(key: tuple[str, str | None, int]) -> float | None:
        return round(statistics.median(cpu_used[key]), 1) if cpu_used.get(key) else None

    timings_out = []
    for indicator_id, breakdown, runs_ms, points in measured:
        median = statistics.median(runs_ms)
        ratio = median / yardstick
        twelve = (
            statistics.median(measured_12[(indicator_id, breakdown)])
            if (indicator_id, breakdown) in measured_12
            else None
        )
        timings_out.append(
            Timing(
                indicator=indicator_id,
                breakdown=breakdown,
                runs_ms=[round(value, 1) for value in runs_ms],
                median_ms=round(median, 1),
                ratio=round(ratio, 2),
                verdict=_verdict(ratio),
                points=points,
                median_12_ms=None if twelve is None else round(twelve, 1),
                ratio_12_to_36=None if twelve is None else round(twelve / median, 2),
                cpu_ms=cpu_median((indicator_id, breakdown, 36)),
                cpu_12_ms=cpu_median((indicator_id, breakdown, 12)),
            )
        )
    return count_runs, timings_out


def _report(count_runs: list[float], timings: list[Timing], header: list[str]) -> str:
    yardstick = statistics.median(count_runs)
    lines = [
        *header,
        f"count(*) over referral: median {yardstick:.1f} ms "
        f"(runs {', '.join(f'{value:.0f}' for value in count_runs)})",
        "time: wall ms for the 36 monthly periods, median; 12: the same for the last 12 of them;",
        "12/36: their ratio (at or above 0.80 is 'within 20%'); CPU: this process's CPU ms a",
        "request (the app in process and the client; PostgreSQL's is not in it), for 36 and 12.",
        "",
        f"{'indicator':<52} {'points':>6} {'36 ms':>7} {'x count':>7}  {'verdict':<9} "
        f"{'12 ms':>7} {'12/36':>6} {'20%':>4} {'CPU 36':>7} {'CPU 12':>7}",
        "-" * 124,
    ]
    within_20 = 0
    for timing in timings:
        label = timing.indicator + (f" by {timing.breakdown}" if timing.breakdown else "")
        twelve = ""
        if timing.median_12_ms is not None and timing.ratio_12_to_36 is not None:
            holds = timing.ratio_12_to_36 >= WITHIN_20_PERCENT
            within_20 += holds
            twelve = (
                f"{timing.median_12_ms:>7.1f} {timing.ratio_12_to_36:>6.2f} "
                f"{'yes' if holds else 'no':>4}"
            )
        cpu = " ".join(
            f"{value:>7.1f}" if value is not None else f"{'':>7}"
            for value in (timing.cpu_ms, timing.cpu_12_ms)
        )
        lines.append(
            f"{label:<52} {timing.points:>6} {timing.median_ms:>7.1f} {timing.ratio:>7.2f}  "
            f"{timing.verdict:<9} {twelve} {cpu}"
        )
    verdicts = [timing.verdict for timing in timings]
    lines += [
        "-" * 124,
        f"pass {verdicts.count('pass')}, within 3x {verdicts.count('within 3x')}, "
        f"FAIL {verdicts.count('FAIL')} (of {len(verdicts)} series); "
        f"12 periods within 20% of 36: {within_20} of {len(timings)}",
    ]
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--referrals", type=int, default=1_000_000, help="target referrals")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per query (median)")
    parser.add_argument("--from", dest="first", default="2023-01-01", help="first day timed")
    parser.add_argument("--to", dest="last", default="2025-12-31", help="last day timed")
    parser.add_argument(
        "--breakdowns", action="store_true", help="also time every offered breakdown"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="time the live statements (empty the indicator rollup) instead of the served path",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--reuse-rollup",
        action="store_true",
        help="do not refresh a rollup that is current (to time a kept database again)",
    )
    parser.add_argument(
        "--database-url", help="time this already loaded database (no create, load or drop)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    first, last = date.fromisoformat(args.first), date.fromisoformat(args.last)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    header = [
        f"indicator benchmark {stamp}: 36 monthly periods {first} to {last}, "
        f"median of {args.runs} runs, cores {os.cpu_count()}, "
        f"load average before {os.getloadavg()[0]:.2f}",
    ]
    load: dict[str, Any] = {}
    rollup: dict[str, Any] = {}
    created_database: str | None = None
    server = ""
    if args.database_url:
        url = plain_url(args.database_url)
    else:
        server = find_server_url()
        created_database = f"ns_indicators_{stamp.lower()}_{os.getpid()}"
        err.print(f"creating database {created_database}")
        asyncio.run(_admin(server, f"CREATE DATABASE {quote_identifier(created_database)}"))
        url = plain_url(server, created_database)
    try:
        if created_database is not None:
            migrate_database(url)
            children, per_child = children_for(args.referrals, args.seed)
            err.print(
                f"{children:,} children for about {args.referrals:,} referrals "
                f"({per_child:.3f} referrals per child in a pilot)"
            )
            load = asyncio.run(_load(url, DemoOptions(children=children, seed=args.seed)))
            load["children_requested"] = children
            header.append(
                f"loaded {load['rows']['referral']:,} referrals, "
                f"{load['rows']['child']:,} children, {load['rows']['case_event']:,} case events, "
                f"{load['rows']['assessment']:,} assessments in {load['load_s']} s, "
                f"{load['rows']['referral'] / load['load_s']:,.0f} referrals a second "
                f"(+ VACUUM ANALYZE and CHECKPOINT {load['vacuum_analyze_checkpoint_s']} s)"
            )
        rollup = asyncio.run(_refresh(url, args.live, args.reuse_rollup))
        if args.live:
            header.append("served: live statements (rollup emptied)")
        elif rollup.get("reused"):
            header.append(
                f"served: the indicator rollup, current, not refreshed (--reuse-rollup; its "
                f"last refresh took {rollup['refresh_s']} s; {rollup['cells']:,} cells, "
                f"{rollup['covered']})"
            )
        else:
            header.append(
                f"served: the indicator rollup, refreshed in {rollup['refresh_s']} s "
                f"with {rollup['refresh_jobs']} sessions "
                f"({rollup['series']} series, {rollup['cells']:,} cells, {rollup['covered']})"
            )
        count_runs, timings = asyncio.run(
            _time_everything(url, first, last, args.runs, args.breakdowns)
        )
        if not args.live and not asyncio.run(_rollup_current(url)):
            raise RuntimeError("the rollup stopped being current while timing: rerun")
    finally:
        if created_database is not None and not args.keep:
            asyncio.run(
                _admin(
                    server,
                    f"DROP DATABASE IF EXISTS {quote_identifier(created_database)} WITH (FORCE)",
                )
            )
        elif created_database is not None:
            err.print(f"kept the database: {url}")
    report = _report(count_runs, timings, header)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"indicators-{stamp}.txt").write_text(report + "\n", encoding="utf-8")
    (RESULTS / f"indicators-{stamp}.json").write_text(
        json.dumps(
            {
                "stamp": stamp,
                "from": first.isoformat(),
                "to": last.isoformat(),
                "runs": args.runs,
                "load": load,
                "rollup": rollup,
                "count_ms": [round(value, 1) for value in count_runs],
                "count_median_ms": round(statistics.median(count_runs), 1),
                "series": [asdict(timing) for timing in timings],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    err.print(f"saved bench/results/indicators-{stamp}.txt and .json")
    return 1 if any(timing.verdict == "FAIL" for timing in timings) else 0


if __name__ == "__main__":
    sys.exit(main())
