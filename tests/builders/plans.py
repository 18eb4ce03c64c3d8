"""Plans made as if every table were tiny: for tests of statements whose plans are kept while
their tables grow (generic plans made at a session's first call, a worker's first batch)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

_SEQ_SCANS = "SELECT relname, seq_scan FROM pg_stat_xact_user_tables WHERE relname = ANY($1)"


@asynccontextmanager
async def scans_costed_at_nothing(url: str) -> AsyncIterator[Any]:
    """A new connection to `url` (so that every plan is made here), in a transaction in which
    reading a table whole costs the planner nothing; everything it did is rolled back after."""
    connection = await asyncpg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(
            "SET LOCAL seq_page_cost = 0; SET LOCAL cpu_tuple_cost = 0; "
            "SET LOCAL cpu_operator_cost = 0"
        )
        try:
            yield connection
        finally:
            await transaction.rollback()
    finally:
        await connection.close()


async def seq_scans(connection: Any, tables: Sequence[str]) -> dict[str, int]:
    """How many times each table was read whole so far in the connection's transaction."""
    counted = dict(await connection.fetch(_SEQ_SCANS, list(tables)))
    return {table: counted.get(table, 0) for table in tables}
