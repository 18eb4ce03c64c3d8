"""Fixtures: a real PostgreSQL database per test worker, migrated once with the real Alembic
scripts as the superuser (the owner), with a runtime role of its own that the app connects as, as
deployed (`neglect-service db roles`); the app with its lifespan started; an httpx client over
ASGI; registered API clients.

Tests commit for real (the service commits per request, and the concurrency tests need separate
transactions), so each test makes its own children, clients and references, and the tests that
count across tables (indicators) clear the domain tables first.

With NEGLECT_TEST_THROUGH_PGBOUNCER=1 (`make test-pgbouncer`), the app reaches the database through
a PgBouncer in transaction mode (`NEGLECT_DB_POOL_MODE=transaction`), still as the runtime role;
`database_url` stays the direct URL, the owner's (migrations, admin work, the tests' own checks),
which that mode requires as `NEGLECT_OWNER_DATABASE_URL`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import pool
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from api.main import create_app
from service import db_roles
from service.auth.clients import create_client
from service.auth.feed_keys import FEED_KEY_PATTERN
from service.auth.keys import KeyRing, issue_access_token
from service.db import SessionFactory, async_url, create_session_factory, transaction
from service.logs import JsonFormatter
from service.migrations import migrate_database
from service.settings import Settings
from tests.resolvers import ExampleNamesResolver
from tests.servers import PgBouncer

TEST_ISSUER = "http://test"
TEST_AUDIENCE = "neglect-service"
# Made afresh for every run, like the database it protects; never a key written in the source.
TEST_KEY_ENCRYPTION_KEY = base64.b64encode(os.urandom(32)).decode()
# Ignored by trust authentication, used by a server that asks for one.
TEST_RUNTIME_PASSWORD = secrets.token_urlsafe(16)
THROUGH_PGBOUNCER = os.environ.get("NEGLECT_TEST_THROUGH_PGBOUNCER") == "1"


def _server_url() -> str:
    url = os.environ.get("DATABASE_URL") or os.environ.get("NEGLECT_DATABASE_URL")
    if url:
        return url
    from service.embedded import ensure_embedded_server

    return ensure_embedded_server(Path(os.environ.get("NEGLECT_EMBEDDED_PGDATA", ".pgdata")))


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def runtime_role_of(url: str) -> str:
    """The runtime role of a test database: roles are cluster-wide, so one per database."""
    return f"{make_url(url).database}_app"


def owner_sessions_for(url: str) -> tuple[SessionFactory, AsyncEngine]:
    engine = create_async_engine(async_url(url), poolclass=pool.NullPool)
    return create_session_factory(engine), engine


async def _create_runtime_role(url: str) -> None:
    factory, engine = owner_sessions_for(url)
    try:
        async with transaction(factory) as session:
            await db_roles.ensure_runtime_role(
                session,
                runtime_role_of(url),
                TEST_RUNTIME_PASSWORD,
                # What `db roles` gives it, so that a pooler in front keeps the timeout.
                Settings.model_fields["db_statement_timeout_ms"].default,
            )
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def database_url(worker_id: str) -> Iterator[str]:
    """A fresh database for this test worker, migrated with `alembic upgrade head` as the
    superuser, which owns its tables, and its runtime role (`runtime_database_url`)."""
    server = _server_url()
    name = f"neglect_test_{worker_id}_{os.getpid()}"
    admin = _plain(server)
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    role = runtime_role_of(url)

    async def recreate(drop_only: bool = False) -> None:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if drop_only:
                await connection.execute(f'DROP ROLE IF EXISTS "{role}"')
            else:
                await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    async def drop_owned() -> None:
        connection = await asyncpg.connect(_plain(url))
        try:
            await connection.execute(f'DROP OWNED BY "{role}"')
        finally:
            await connection.close()

    asyncio.run(recreate())
    try:
        migrate_database(url)
        asyncio.run(_create_runtime_role(url))
        yield url
        asyncio.run(drop_owned())
    finally:
        asyncio.run(recreate(drop_only=True))


@pytest.fixture(scope="session")
def runtime_database_url(database_url: str) -> str:
    """The test database as its runtime role: what the app, its pool and the CLI connect as."""
    return runtime_database_url_of(database_url)


def runtime_database_url_of(url: str) -> str:
    return db_roles.runtime_database_url(url, runtime_role_of(url), TEST_RUNTIME_PASSWORD)


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    return str(getattr(request.config, "workerinput", {}).get("workerid", "main"))


@pytest.fixture(scope="session")
def settings(request: pytest.FixtureRequest) -> Settings:
    # Production, as deployed: the key-encryption key is given, none is made on disk. Behind
    # the pooler, the owner's URL (required then) is the direct one.
    pooled = {}
    if THROUGH_PGBOUNCER:
        pooled = {
            "db_pool_mode": "transaction",
            "owner_database_url": request.getfixturevalue("database_url"),
        }
    return Settings(
        issuer=TEST_ISSUER,
        audience=TEST_AUDIENCE,
        database_url=None,
        env="production",
        key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
        key_encryption_key_file=None,
        **pooled,
        # The test receivers of the webhook tests listen on loopback (development and tests only).
        webhook_allowed_networks=["127.0.0.1/32"],
        # Exact figures only: a test that refreshes the indicator rollup is served from it while
        # it is exact, and every other test gets the live figures.
        indicator_max_staleness_s=0,
    )


@pytest.fixture(scope="session")
def pgbouncer(database_url: str) -> Iterator[PgBouncer]:
    """A real PgBouncer in transaction mode in front of the test database's server, letting in
    the superuser that owns the tables and the database's runtime role."""
    folder = Path(tempfile.mkdtemp(prefix="ns-pgbouncer-"))
    bouncer = PgBouncer(
        folder,
        database_url,
        pool_mode="transaction",
        users={runtime_role_of(database_url): TEST_RUNTIME_PASSWORD},
    )
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(folder, ignore_errors=True)


def through_pgbouncer(bouncer: PgBouncer, database_url: str) -> str:
    """The test database through `bouncer`, as its runtime role (what the app connects as)."""
    return bouncer.url(str(make_url(database_url).database), runtime_role_of(database_url))


@pytest.fixture(scope="session")
async def app(
    settings: Settings, database_url: str, runtime_database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[FastAPI]:
    url = runtime_database_url
    if THROUGH_PGBOUNCER:
        url = through_pgbouncer(request.getfixturevalue("pgbouncer"), database_url)
    application = create_app(settings, url)
    application.state.webhook_resolver = ExampleNamesResolver()
    async with application.router.lifespan_context(application):
        yield application


async def assert_errors_are_problems(response: httpx.Response) -> None:
    """Every error any test provokes must be RFC 9457 problem+json (SPEC 3), except on the OData
    feed, whose clients read OData JSON errors: there, every error must be one of those."""
    if response.status_code >= 400 and response.request.url.path.startswith("/odata"):
        await response.aread()
        content_type = response.headers.get("content-type", "")
        body = response.json() if content_type.startswith("application/json") else {}
        error = body.get("error") if isinstance(body, dict) else None
        where = f"{response.request.method} {response.request.url.path} {response.status_code}"
        assert isinstance(error, dict), f"{where} as {content_type!r}, not an OData error"
        assert error.get("code"), f"{where}: an OData error without a code"
        assert error.get("message"), f"{where}: an OData error without a message"
        assert response.headers.get("odata-version") == "4.0"
    elif response.status_code >= 400:
        content_type = response.headers.get("content-type", "")
        assert content_type.startswith("application/problem+json"), (
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code} as {content_type!r}, not problem+json"
        )


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://test",
        event_hooks={"response": [assert_errors_are_problems]},
    ) as http:
        yield http


@pytest.fixture
def session_factory(app: FastAPI) -> SessionFactory:
    factory: SessionFactory = app.state.session_factory
    return factory


@pytest.fixture(scope="session")
async def owner_session_factory(database_url: str) -> AsyncIterator[SessionFactory]:
    """Sessions as the superuser that owns the tables, for what the runtime role may not do
    (TRUNCATE, the demo-data loader, tampering with the audit trail)."""
    factory, engine = owner_sessions_for(database_url)
    yield factory
    await engine.dispose()


@pytest.fixture
async def empty_domain_tables(owner_session_factory: SessionFactory) -> None:
    """For tests that count whole tables (indicators): no other test's rows."""
    from tests.builders.indicators import clear_domain_tables

    await clear_domain_tables(owner_session_factory)


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    secret: str | None
    agency_name: str
    agency_type: str
    scopes: list[str]
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class ClientMaker:
    """Registers API clients in the database and signs tokens with the service's own key ring."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(
        self,
        scopes: list[str],
        agency_name: str | None = None,
        agency_type: str = "school",
        token_scopes: list[str] | None = None,
    ) -> RegisteredClient:
        agency = agency_name or f"Agency {uuid.uuid4().hex[:8]}"
        async with transaction(self.app.state.session_factory) as session:
            created = await create_client(
                session,
                name=f"test client {secrets.token_hex(3)}",
                agency_type=agency_type,
                agency_name=agency,
                scopes=scopes,
            )
        if created.secret:
            SECRETS_SEEN.add(created.secret)
        ring: KeyRing = await self.app.state.key_ring()
        token = issue_access_token(
            ring,
            issuer=TEST_ISSUER,
            audience=TEST_AUDIENCE,
            client_id=created.client.client_id,
            scopes=token_scopes if token_scopes is not None else scopes,
            ttl_s=900,
        )
        return RegisteredClient(
            client_id=created.client.client_id,
            secret=created.secret,
            agency_name=agency,
            agency_type=agency_type,
            scopes=scopes,
            token=token,
        )


@pytest.fixture
def make_client(app: FastAPI) -> ClientMaker:
    return ClientMaker(app)


# --- No token or secret ever reaches a log line -------------------------------------------------

SECRETS_SEEN: set[str] = set()
_TOKEN_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]{5,}")
_FEED_KEY_FRAGMENT = re.compile(r"nfk_[A-Za-z0-9_-]{8,}")
"""A feed key, or enough of one (more than the 4-character hint the service shows) to matter."""


class _RedactFeedKeysInClientLog(logging.Filter):
    """httpx, the tests' HTTP client, logs each request's URL at INFO, with the `feed_key`
    parameter a Web API credential puts there: that is the client's own log (on an analyst's
    machine, Power Query's), not the service's, so it is redacted where it is written, and the
    check below still sees every line the service writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                FEED_KEY_PATTERN.sub("nfk_[redacted]", str(arg))
                if FEED_KEY_PATTERN.search(str(arg))
                else arg
                for arg in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_RedactFeedKeysInClientLog())


class _LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(autouse=True)
def no_secrets_in_logs() -> Iterator[list[str]]:
    """Every test also checks that the log lines it produced carry no token and no secret."""
    handler = _LogLines()
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
    leaked = [line for line in handler.lines if _TOKEN_PATTERN.search(line)]
    leaked += [line for line in handler.lines if _FEED_KEY_FRAGMENT.search(line)]
    leaked += [line for line in handler.lines for secret in SECRETS_SEEN if secret in line]
    assert not leaked, f"log lines leak a token, feed key or secret: {leaked[:3]}"
