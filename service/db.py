"""Engine, sessions and the driver pool. Nothing connects at import time: the lifespan calls
`create_engine` and `create_pool`."""

from __future__ import annotations

import functools
import ssl
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
from sqlalchemy.pool import NullPool

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


SslArgument = ssl.SSLContext | str | bool
# libpq's names, as managed services print their connection strings; asyncpg takes `ssl`.
_LIBPQ_TLS_PARAMETERS = ("sslmode", "sslrootcert")


def _tls(settings: Settings, url: URL) -> tuple[URL, SslArgument | None]:
    """The URL without libpq's TLS parameters, and asyncpg's `ssl` for them and the settings.

    The settings win over the URL. `require` verifies the server's certificate once a root
    certificate is given, as libpq does; `verify-ca` and `verify-full` without one trust the
    system's store (libpq would read ~/.postgresql/root.crt).
    """
    mode = settings.db_sslmode or url.query.get("sslmode")
    rootcert = settings.db_sslrootcert or url.query.get("sslrootcert")
    url = url.difference_update_query(_LIBPQ_TLS_PARAMETERS)
    if isinstance(mode, tuple) or isinstance(rootcert, tuple):
        raise ValueError("sslmode and sslrootcert may appear once in the database URL")
    if mode is None:
        return url, None
    if mode == "disable":
        return url, False
    if mode in ("allow", "prefer") or (mode == "require" and rootcert is None):
        return url, mode
    if mode not in ("require", "verify-ca", "verify-full"):
        raise ValueError(f"unknown sslmode {mode!r} in the database URL")
    context = ssl.create_default_context(cafile=str(rootcert) if rootcert else None)
    context.check_hostname = mode == "verify-full"
    return url, context


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _drop_closed_connections(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A pre-ping without a round trip: asyncpg marks a connection closed as soon as the server
    drops it (restart, failover), and the pool then replaces it instead of handing it out.
    A connection that breaks without the socket noticing fails its first statement, and the
    request answers 503 with Retry-After."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this connection")


def create_engine(
    settings: Settings,
    url: str | None = None,
    *,
    read_only: bool = False,
    ping: bool = False,
    direct: bool = False,
) -> AsyncEngine:
    """An asyncpg engine whose pool drops connections the server closed and bounds every wait.

    `read_only` begins every transaction READ ONLY (in the BEGIN itself, no extra round trip),
    so code given this engine cannot write even when it runs on the primary. `ping` spends a
    round trip on every checkout to find a dead connection before a query does. `direct` says
    `url` reaches the server itself, not a pooler (the owner's URL): its connections are set up
    as in `session` pool mode whatever `NEGLECT_DB_POOL_MODE` says.
    """
    target, tls = _tls(settings, async_url(url or database_url(settings)))
    engine = create_async_engine(
        target,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_pre_ping=ping,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        connect_args=_connect_args(settings, tls, direct=direct),
    )
    event.listen(engine.sync_engine, "checkout", _drop_closed_connections)
    if read_only:
        return engine.execution_options(postgresql_readonly=True)
    return engine


def create_migration_engine(settings: Settings, url: str) -> AsyncEngine:
    """A one-connection engine for Alembic: direct to the primary, with the service's TLS."""
    target, tls = _tls(settings, async_url(url))
    return create_async_engine(
        target, poolclass=NullPool, connect_args={} if tls is None else {"ssl": tls}
    )


def _connect_args(
    settings: Settings, tls: SslArgument | None, *, driver_pool: bool = False, direct: bool = False
) -> dict[str, Any]:
    timeout_ms = settings.db_statement_timeout_ms
    server_settings = {"application_name": "neglect-service"}
    args: dict[str, Any] = {"timeout": 5, "server_settings": server_settings}
    if tls is not None:
        args["ssl"] = tls
    if settings.db_pool_mode == "session" or direct:
        server_settings["statement_timeout"] = str(timeout_ms)
        if driver_pool:
            # The functions this pool calls look rows up by key: a generic plan is always right
            # for them, and re-planning their statements in every transaction would double
            # their cost.
            server_settings["plan_cache_mode"] = "force_generic_plan"
        # The server's timeout fires first; this one only covers a server that stopped answering.
        args["command_timeout"] = timeout_ms / 1000 + 5
        return args
    # A transaction-mode pooler refuses startup parameters other than a few it tracks itself
    # (application_name among them), and hands every transaction to any of its server
    # connections, so a named prepared statement may be missing from the next one.
    args["statement_cache_size"] = 0
    args["connection_class"] = pooler_connection_class(timeout_ms)
    # The driver pool's single statements run outside any transaction, where the per-
    # transaction timeout cannot reach. The role's own setting (`db roles`) covers them on the
    # server; asyncpg also cancels them there (PgBouncer forwards the cancel request) at the
    # moment statement_timeout would fire, in case the role has none.
    args["command_timeout"] = timeout_ms / 1000 if driver_pool else timeout_ms / 1000 + 5
    return args


@functools.cache
def pooler_connection_class(statement_timeout_ms: int) -> type[asyncpg.Connection]:
    """An asyncpg connection for a transaction-mode pooler (`NEGLECT_DB_POOL_MODE=transaction`).

    - Every transaction sets its own statement timeout in the message that begins it: asyncpg
      sends `BEGIN` as a simple query, and a simple query may carry several statements, so
      `BEGIN; SET LOCAL statement_timeout = ...` costs no round trip more than `BEGIN`.
    - Statements are unnamed (the statement cache is off) and re-Parsed with every Bind, so no
      statement has to outlive its transaction on one server connection. Their descriptions
      (parameter and column types) are kept per connection here, as SQLAlchemy keeps them for
      the engine, so a statement costs one round trip (Parse, Bind, Execute, Sync) as with a
      named prepared statement, not two (a Describe first).

    Both lean on asyncpg's internals (`Transaction.start` executing its BEGIN text, and
    `_get_statement`), which tests/api/test_pgbouncer.py checks against a real PgBouncer.
    """
    begin_suffix = f" SET LOCAL statement_timeout = {int(statement_timeout_ms)};"

    class PoolerConnection(asyncpg.Connection):  # type: ignore[misc]
        async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
            if not args and query.startswith("BEGIN"):
                query += begin_suffix
            result: str = await super().execute(query, *args, timeout=timeout)
            return result

        async def _get_statement(
            self,
            query: str,
            timeout: float | None,
            *,
            named: str | bool | None = False,
            use_cache: bool = True,
            ignore_custom_codec: bool = False,
            record_class: Any = None,
        ) -> Any:
            if named is not False or not use_cache:
                return await super()._get_statement(
                    query,
                    timeout,
                    named=named,
                    use_cache=use_cache,
                    ignore_custom_codec=ignore_custom_codec,
                    record_class=record_class,
                )
            described = self._described_statements()
            key = (query, record_class, ignore_custom_codec)
            statement = described.get(key)
            if statement is None or statement.closed:
                # With the cache off, asyncpg returns an unnamed statement marked unprepared,
                # which it re-Parses in the same message as every Bind.
                statement = await super()._get_statement(
                    query,
                    timeout,
                    ignore_custom_codec=ignore_custom_codec,
                    record_class=record_class,
                )
                if len(described) >= _DESCRIBED_STATEMENTS:
                    del described[next(iter(described))]
                described[key] = statement
            return statement

        def _drop_local_statement_cache(self) -> None:
            # Called by asyncpg when types or the schema changed under the statements.
            super()._drop_local_statement_cache()
            self._described_statements().clear()

        def _described_statements(self) -> dict[tuple[str, Any, bool], Any]:
            described: dict[tuple[str, Any, bool], Any] = self.__dict__.setdefault(
                "_neglect_described", {}
            )
            return described

    return PoolerConnection


_DESCRIBED_STATEMENTS = 100
"""Statement descriptions kept per pooled connection (asyncpg's own cache holds 100 too)."""


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
    target, tls = _tls(settings, async_url(url or database_url(settings)))
    dsn = target.set(drivername="postgresql").render_as_string(hide_password=False)
    pool = await asyncpg.create_pool(
        dsn,
        # No floor: asyncpg would otherwise reconnect in the background through an outage.
        min_size=0,
        max_size=settings.db_pool_size,
        reset=_keep_session,
        **_connect_args(settings, tls, driver_pool=True),
    )
    return DriverPool(pool, settings.db_pool_timeout_s)


def startup_refusal_hint(exc: BaseException) -> str | None:
    """What to do when the server, or a pooler in front of it, refused the connection's start."""
    if "unsupported startup parameter" in str(exc):
        return (
            "the database (a connection pooler in transaction mode?) refused a startup "
            "parameter: set NEGLECT_DB_POOL_MODE=transaction"
        )
    return None


async def role_statement_timeout_ms(pool: DriverPool) -> int | None:
    """The statement timeout a connection gets from its role and database (0: none; None: the
    database could not be asked)."""
    try:
        async with pool.acquire() as connection:
            value = await connection.fetchval(
                "SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'"
            )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return None
    return int(value)


def driver_options(settings: Settings, url: str | None = None) -> tuple[str, dict[str, Any]]:
    """The DSN and `asyncpg.connect` arguments of one plain driver connection with the engine's
    settings, TLS and pool mode (the census import's worker processes each make one)."""
    target, tls = _tls(settings, async_url(url or database_url(settings)))
    dsn = target.set(drivername="postgresql").render_as_string(hide_password=False)
    return dsn, _connect_args(settings, tls)


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed on success and rolled back on error (CLI and worker)."""
    async with factory() as session, session.begin():
        yield session
