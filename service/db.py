"""Engine, sessions and the driver pool. Nothing connects at import time: the lifespan calls
`create_engine` and `create_pool`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from sqlalchemy import TextClause, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service.settings import Settings

SessionFactory = async_sessionmaker[AsyncSession]


def async_url(raw: str) -> URL:
    """Turn any PostgreSQL URL (`postgres://`, `postgresql+psycopg://`...) into an asyncpg one."""
    url = make_url(raw.replace("postgres://", "postgresql://", 1))
    return url.set(drivername="postgresql+asyncpg")


def database_url(settings: Settings) -> str:
    """The configured URL, or the embedded server's when none is configured."""
    if settings.database_url is not None:
        return str(settings.database_url)
    from service.embedded import ensure_embedded_server

    return ensure_embedded_server(settings.embedded_pgdata)


# Database functions are called with named arguments, each parameter `p_<name>` bound by its name,
# from one list of names: no positional order for Python and SQL to agree on.
def _call(function: str, arguments: str, record: bool) -> str:
    call = f"{function}({arguments})"
    # A record's OUT parameters become columns; a scalar or void function is cheaper called bare.
    return f"SELECT * FROM {call}" if record else f"SELECT {call}"  # noqa: S608 - our names


def function_call(function: str, names: Sequence[str], *, record: bool = False) -> TextClause:
    """`SELECT function(p_a => :a, ...)` for a session, to bind a mapping by name; with `record`,
    `SELECT * FROM function(...)`, one column per OUT parameter."""
    arguments = ", ".join(f"p_{name} => :{name}" for name in names)
    return text(_call(function, arguments, record))


def driver_function_call(function: str, names: Sequence[str], *, record: bool = False) -> str:
    """The same statement for the driver pool: pass the values in the order of `names`."""
    arguments = ", ".join(f"p_{name} => ${number}" for number, name in enumerate(names, 1))
    return _call(function, arguments, record)


def owner_database_url(settings: Settings) -> str:
    """The URL of the role that owns the tables (migrations, admin commands): the configured
    owner URL, else the service's own."""
    if settings.owner_database_url is not None:
        return str(settings.owner_database_url)
    return database_url(settings)


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _drop_closed_connections(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A pre-ping without a round trip: asyncpg marks a connection closed as soon as the server
    drops it (restart, failover), and the pool then replaces it instead of handing it out.
    A connection that breaks without the socket noticing fails its first statement, and the
    request answers 503 with Retry-After."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this connection")


def create_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    """An asyncpg engine whose pool drops connections the server closed and bounds every wait."""
    engine = create_async_engine(
        async_url(url or database_url(settings)),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        connect_args=_connect_args(settings),
    )
    event.listen(engine.sync_engine, "checkout", _drop_closed_connections)
    return engine


def _connect_args(settings: Settings, **server_settings: str) -> dict[str, Any]:
    return {
        "timeout": 5,
        "command_timeout": settings.db_statement_timeout_ms / 1000 + 5,
        "server_settings": {
            "application_name": "neglect-service",
            "statement_timeout": str(settings.db_statement_timeout_ms),
            **server_settings,
        },
    }


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset on release: nothing beyond asyncpg's own rollback of an open transaction.

    The driver pool runs single statements in autocommit and sets no session state (no SET,
    LISTEN, cursor or session-level advisory lock), so asyncpg's default reset query would be a
    round trip per request for nothing.
    """


@dataclass(frozen=True)
class DriverPool:
    """A plain asyncpg pool for the hot paths that are one database function call.

    asyncpg replaces a connection the server closed when it is next acquired, and a request that
    meets a dead one, or waits longer than `acquire_timeout_s` for a free one, answers 503 like
    the engine's sessions do.
    """

    pool: asyncpg.Pool
    acquire_timeout_s: float

    def acquire(self) -> Any:
        """`async with driver_pool.acquire() as connection:`."""
        return self.pool.acquire(timeout=self.acquire_timeout_s)

    async def close(self) -> None:
        await self.pool.close()


async def create_pool(settings: Settings, url: str | None = None) -> DriverPool:
    """The driver pool, connected lazily, with the engine's timeouts."""
    dsn = (
        async_url(url or database_url(settings))
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    pool = await asyncpg.create_pool(
        dsn,
        # No floor: asyncpg would otherwise reconnect in the background through an outage.
        min_size=0,
        max_size=settings.db_pool_size,
        reset=_keep_session,
        # The functions this pool calls look rows up by key: a generic plan is always right for
        # them, and re-planning their statements in every transaction would double their cost.
        **_connect_args(settings, plan_cache_mode="force_generic_plan"),
    )
    return DriverPool(pool, settings.db_pool_timeout_s)


def driver_options(settings: Settings, url: str | None = None) -> tuple[str, dict[str, Any]]:
    """The DSN and `asyncpg.connect` arguments of one plain driver connection with the engine's
    settings (the census import's worker processes each make one)."""
    dsn = (
        async_url(url or database_url(settings))
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    return dsn, _connect_args(settings)


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed on success and rolled back on error (CLI and worker)."""
    async with factory() as session, session.begin():
        yield session
