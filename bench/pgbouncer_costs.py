"""What PgBouncer transaction mode costs, and what the choices in `service.db` save.

Run with `.venv/bin/python -m bench.pgbouncer_costs` from the project root. A private PostgreSQL
(embedded binaries) and a PgBouncer in transaction mode in front of it; for each variant,
`--tasks` concurrent tasks repeat one request shape for `--seconds`:

- session: BEGIN, two SELECTs by key, COMMIT on a SQLAlchemy session (a typical request);
- single: one statement in autocommit on the driver pool (the referral create's shape).

Variants:

1. direct         no pooler, NEGLECT_DB_POOL_MODE=session (startup parameters, named statements)
2. transaction    through PgBouncer, NEGLECT_DB_POOL_MODE=transaction as shipped: the timeout
                  in the BEGIN message, statements described once per connection
3. set-local      as 2, plus the timeout as a statement of its own in every transaction
4. describe-each  as 2, but every statement described again (`prepared_statement_cache_size=0`
                  and asyncpg's cache off alone): two round trips per statement

The figures are transactions per second on this machine; PgBouncer, PostgreSQL and the client
share its cores, so compare the variants with each other, not with another machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import text

from service.db import create_engine, create_pool, create_session_factory
from service.settings import Settings
from tests.servers import PgBouncer, PrivatePostgres

KEYED = text("SELECT relname FROM pg_class WHERE oid = CAST(:oid AS oid)")
SINGLE = "SELECT relname FROM pg_class WHERE oid = $1::oid"
TIMEOUT = text("SET LOCAL statement_timeout = 15000")


async def _rate(work: Callable[[], Awaitable[None]], tasks: int, seconds: float) -> float:
    done = 0
    stop_at = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            await work()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(tasks)))
    return done / (time.monotonic() - started)


async def measure(
    settings: Settings, url: str, variant: str, tasks: int, seconds: float
) -> dict[str, float]:
    target = url
    if variant == "describe-each":
        target += "?prepared_statement_cache_size=0"
    engine = create_engine(settings, target)
    factory = create_session_factory(engine)
    if variant == "describe-each":
        # asyncpg's own cache off, nothing kept: what `statement_cache_size=0` alone gives.
        raw = await asyncpg.create_pool(url, min_size=0, max_size=10, statement_cache_size=0)
    else:
        raw = (await create_pool(settings, url)).pool

    async def session_work() -> None:
        async with factory() as session, session.begin():
            if variant == "set-local":
                await session.execute(TIMEOUT)
            await session.execute(KEYED, {"oid": 1259})
            await session.execute(KEYED, {"oid": 1255})

    async def single_work() -> None:
        async with raw.acquire() as connection:
            await connection.fetchval(SINGLE, 1259)

    try:
        for work in (session_work, single_work):
            await work()  # connect and describe before timing
        return {
            "session_tx_per_s": round(await _rate(session_work, tasks, seconds)),
            "single_per_s": round(await _rate(single_work, tasks, seconds)),
        }
    finally:
        await raw.close()
        await engine.dispose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="ns-pgbcost-", dir="/tmp"))
    postgres = PrivatePostgres(folder / "postgres")
    bouncer = PgBouncer(folder / "pgbouncer", postgres.url(), pool_mode="transaction")
    try:
        postgres.initialise()
        postgres.start()
        bouncer.start()
        session = Settings(database_url=postgres.url())
        pooled = Settings(
            database_url=bouncer.url("postgres"),
            owner_database_url=postgres.url(),
            db_pool_mode="transaction",
        )
        results: dict[str, Any] = {"tasks": args.tasks, "seconds": args.seconds}
        for variant, settings, url in (
            ("direct", session, postgres.url()),
            ("transaction", pooled, bouncer.url("postgres")),
            ("set-local", pooled, bouncer.url("postgres")),
            ("describe-each", pooled, bouncer.url("postgres")),
        ):
            results[variant] = await measure(settings, url, variant, args.tasks, args.seconds)
            print(f"{variant:<14}{json.dumps(results[variant])}", file=sys.stderr)
        return results
    finally:
        bouncer.stop()
        if postgres.is_running():
            postgres.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pgbouncer_costs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    print(json.dumps(asyncio.run(run(parser.parse_args(argv))), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
