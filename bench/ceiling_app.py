"""The machine's ceiling for a durable POST: FastAPI + asyncpg, one INSERT of the body per request.

`bench/run.sh` serves it with uvicorn (2 workers, like the service) and drives it with the same wrk
script and bodies as `POST /v1/referrals`. It authenticates nothing and validates nothing beyond
PostgreSQL parsing the JSON; the INSERT commits with the server's default durability, like the
service's commit. Its pool skips asyncpg's reset query on release, as the service's pool does, so
neither side pays a round trip the other does not. The table `bench_ceiling` is created by
`bench.harness create-db`.

Configuration: `BENCH_CEILING_DSN` (a plain postgresql:// URL) and `BENCH_CEILING_POOL` (pool size
per worker, default 16: enough that the pool never limits 32 connections over 2 workers).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

INSERT = "INSERT INTO bench_ceiling (body) VALUES ($1::jsonb) RETURNING id"


async def _keep_session(connection: asyncpg.Connection) -> None:
    """No reset query on release, as the service's own pool: nothing here changes the session."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = int(os.environ.get("BENCH_CEILING_POOL", "16"))
    pool = await asyncpg.create_pool(
        os.environ["BENCH_CEILING_DSN"], min_size=size, max_size=size, reset=_keep_session
    )
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/health")
async def health() -> dict[str, str]:
    """The process is up (readiness for the harness)."""
    return {"status": "ok"}


@app.post("/v1/referrals", status_code=201)
async def insert_body(request: Request) -> JSONResponse:
    """Store the body as it came, in one INSERT, and answer with the new row's id."""
    body = await request.body()
    pool: asyncpg.Pool = request.app.state.pool
    row_id = await pool.fetchval(INSERT, body.decode())
    return JSONResponse({"id": str(row_id)}, status_code=201)
