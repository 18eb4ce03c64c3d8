"""OData feed benchmark: the full pull of every indicator point (every indicator offering monthly
figures, without a breakdown and with each breakdown it offers) over 36 months, against the same
series fetched one by one through the JSON API, on the `make bench-indicators` data.

    bash bench/feed.sh                            # create, load 1,000,000 referrals, time, drop
    bash bench/feed.sh --referrals 100000         # a smaller partnership
    bash bench/feed.sh --keep                     # keep the database (its URL is printed)
    bash bench/feed.sh --database-url URL         # time an already loaded database only

The loading is `bench/indicators_bench.py`'s (the demo generator, VACUUM ANALYZE, CHECKPOINT). The
app runs in process (httpx over ASGI: the real routes, authentication and suppression), as
indicators_bench does. One pull is:

- JSON: `GET /v1/indicators/{id}?from=&to=&period=month[&breakdown=]` for every series, in turn,
  as a bearer-token client would;
- OData: `GET /odata/IndicatorPoints?from=&to=&period=month` with a feed key (HTTP Basic), then
  every `@odata.nextLink` until there is none (page size `--page-size`, as `Prefer:
  odata.maxpagesize`).

Both pulls run once to warm the cache, then `--runs` times, alternating; medians are compared.
Before timing, the OData rows are checked to be the JSON rows. Verdict: pass when the OData pull
takes less than twice the JSON pull (issue 13, acceptance 6); the run exits 1 otherwise. Results
go to `bench/results/feed-<time>.json` and `.txt`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any, Final

import httpx

from api.main import create_app
from bench.harness import find_server_url, plain_url, quote_identifier
from bench.indicators_bench import RESULTS, STATEMENT_TIMEOUT_MS, _admin, _load, children_for, err
from service.auth.clients import create_client
from service.auth.feed_keys import create_feed_key
from service.auth.keys import issue_access_token
from service.db import transaction
from service.demo.generator import DemoOptions
from service.indicators.catalogue import load_catalogue
from service.migrations import migrate_database
from service.settings import Settings

ISSUER: Final = "http://bench"
AUDIENCE: Final = "neglect-service"
LIMIT: Final = 2.0

Row = tuple[Any, ...]


def _series() -> list[tuple[str, str | None]]:
    return [
        (meta.id, breakdown)
        for meta in load_catalogue().values()
        if "month" in meta.periods
        for breakdown in (None, *meta.breakdowns)
    ]


async def _json_pull(
    client: httpx.AsyncClient, headers: dict[str, str], window: dict[str, str]
) -> list[Row]:
    rows: list[Row] = []
    for indicator, breakdown in _series():
        params = dict(window) | ({"breakdown": breakdown} if breakdown else {})
        response = await client.get(f"/v1/indicators/{indicator}", params=params, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"{indicator}: {response.status_code} {response.text[:300]}")
        for point in response.json()["series"]:
            value = point["value"]
            rows.append(
                (
                    indicator,
                    breakdown,
                    point["label"],
                    point["group"],
                    point["numerator"],
                    point["denominator"],
                    None if value is None else float(value),
                    point["suppressed"],
                )
            )
    return rows


async def _odata_pull(
    client: httpx.AsyncClient, headers: dict[str, str], window: dict[str, str]
) -> tuple[list[Row], int]:
    response = await client.get("/odata/IndicatorPoints", params=window, headers=headers)
    rows: list[Row] = []
    pages = 0
    while True:
        if response.status_code != 200:
            raise RuntimeError(f"odata: {response.status_code} {response.text[:300]}")
        body = response.json()
        pages += 1
        rows.extend(
            (
                row["IndicatorId"],
                row["Breakdown"],
                row["Label"],
                row["Group"],
                row["Numerator"],
                row["Denominator"],
                row["Value"],
                row["Suppressed"],
            )
            for row in body["value"]
        )
        if "@odata.nextLink" not in body:
            return rows, pages
        response = await client.get(body["@odata.nextLink"], headers=headers)


async def _time(url: str, first: date, last: date, runs: int, page_size: int) -> dict[str, Any]:
    settings = Settings(
        issuer=ISSUER,
        audience=AUDIENCE,
        database_url=None,
        db_statement_timeout_ms=STATEMENT_TIMEOUT_MS,
        log_level="WARNING",
        api_requests_per_minute=0,
    )
    app = create_app(settings, url)
    async with app.router.lifespan_context(app):
        async with transaction(app.state.session_factory) as session:
            created = await create_client(
                session,
                name="feed benchmark",
                agency_type="local_authority",
                agency_name="Benchmark BI",
                scopes=["indicators:read"],
            )
            issued = await create_feed_key(session, created.client.client_id, "benchmark")
        token = issue_access_token(
            await app.state.key_ring(),
            issuer=ISSUER,
            audience=AUDIENCE,
            client_id=created.client.client_id,
            scopes=["indicators:read"],
            ttl_s=3600,
        )
        bearer = {"Authorization": f"Bearer {token}"}
        credentials = f"{created.client.client_id}:{issued.key}".encode()
        feed = {
            "Authorization": "Basic " + base64.b64encode(credentials).decode(),
            "Prefer": f"odata.maxpagesize={page_size}",
        }
        window = {"from": first.isoformat(), "to": last.isoformat(), "period": "month"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=3600
        ) as client:
            json_rows = await _json_pull(client, bearer, window)  # warm
            odata_rows, pages = await _odata_pull(client, feed, window)  # warm
            if Counter(json_rows) != Counter(odata_rows):
                raise RuntimeError("the OData rows are not the JSON rows")
            err.print(f"{len(odata_rows):,} points in {len(_series())} series, {pages} pages")
            json_ms: list[float] = []
            odata_ms: list[float] = []
            for run in range(runs):
                started = time.perf_counter()
                await _json_pull(client, bearer, window)
                json_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                await _odata_pull(client, feed, window)
                odata_ms.append((time.perf_counter() - started) * 1000)
                err.print(
                    f"  run {run + 1}: JSON {json_ms[-1]:.0f} ms, OData {odata_ms[-1]:.0f} ms"
                )
    return {
        "points": len(odata_rows),
        "series": len(_series()),
        "pages": pages,
        "json_ms": [round(value, 1) for value in json_ms],
        "odata_ms": [round(value, 1) for value in odata_ms],
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--referrals", type=int, default=1_000_000, help="target referrals")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="timed pulls of each kind (median)")
    parser.add_argument("--from", dest="first", default="2023-01-01", help="first day")
    parser.add_argument("--to", dest="last", default="2025-12-31", help="last day")
    parser.add_argument("--page-size", type=int, default=5000, help="OData rows per page")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--database-url", help="time this already loaded database")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    first, last = date.fromisoformat(args.first), date.fromisoformat(args.last)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    load: dict[str, Any] = {}
    created_database: str | None = None
    server = ""
    if args.database_url:
        url = plain_url(args.database_url)
    else:
        server = find_server_url()
        created_database = f"ns_feed_{stamp.lower()}_{os.getpid()}"
        err.print(f"creating database {created_database}")
        asyncio.run(_admin(server, f"CREATE DATABASE {quote_identifier(created_database)}"))
        url = plain_url(server, created_database)
    try:
        migrate_database(url)
        if created_database is not None:
            children, _ = children_for(args.referrals, args.seed)
            load = asyncio.run(_load(url, DemoOptions(children=children, seed=args.seed)))
        timing = asyncio.run(_time(url, first, last, args.runs, args.page_size))
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
    json_median = statistics.median(timing["json_ms"])
    odata_median = statistics.median(timing["odata_ms"])
    ratio = odata_median / json_median
    verdict = "pass" if ratio < LIMIT else "FAIL"
    referrals = load.get("rows", {}).get("referral")
    lines = [
        f"feed benchmark {stamp}: monthly {first} to {last}, median of {args.runs} pulls each, "
        f"cores {os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}",
        f"data: {referrals:,} referrals (loaded in {load['load_s']} s)"
        if referrals
        else f"data: {url.rsplit('/', 1)[-1]} (already loaded)",
        f"{timing['points']:,} points in {timing['series']} series; OData {timing['pages']} pages "
        f"of up to {args.page_size}",
        f"JSON API, one request per series: median {json_median:.0f} ms "
        f"(runs {', '.join(f'{v:.0f}' for v in timing['json_ms'])})",
        f"OData, the full pull:             median {odata_median:.0f} ms "
        f"(runs {', '.join(f'{v:.0f}' for v in timing['odata_ms'])})",
        f"OData / JSON = {ratio:.2f} (limit {LIMIT:.0f}): {verdict}",
    ]
    report = "\n".join(lines)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"feed-{stamp}.txt").write_text(report + "\n", encoding="utf-8")
    (RESULTS / f"feed-{stamp}.json").write_text(
        json.dumps({"stamp": stamp, "load": load, **timing, "ratio": round(ratio, 3)}, indent=2),
        encoding="utf-8",
    )
    return 0 if verdict == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
