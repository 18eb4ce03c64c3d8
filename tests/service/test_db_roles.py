"""`neglect-service db roles`: the runtime role, created idempotently and granted only what the
service needs; the owner's URL for migrations and admin commands (issue 10, finding 6)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from service.cli.main import app as cli_app
from service.db import async_url, create_session_factory, transaction
from service.db_roles import ensure_runtime_role, runtime_role_name
from service.settings import Settings, get_settings


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _fetch(url: str, query: str, *arguments: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(_plain(url))
    try:
        return list(await connection.fetch(query, *arguments))
    finally:
        await connection.close()


@pytest.fixture
def role(database_url: str) -> Iterator[str]:
    """A role name of this test's own (roles are cluster-wide), dropped afterwards."""
    name = f"neglect_roles_test_{uuid.uuid4().hex[:10]}"
    yield name

    async def drop() -> None:
        connection = await asyncpg.connect(_plain(database_url))
        try:
            exists = await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
            if exists:
                await connection.execute(f'DROP OWNED BY "{name}"')
                await connection.execute(f'DROP ROLE "{name}"')
        finally:
            await connection.close()

    asyncio.run(drop())


@pytest.fixture
def owner_cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # DATABASE_URL names a role that does not exist: these commands must use the owner's URL.
    monkeypatch.setenv("NEGLECT_OWNER_DATABASE_URL", database_url)
    monkeypatch.setenv(
        "DATABASE_URL",
        make_url(database_url).set(username="no_such_role").render_as_string(False),
    )
    monkeypatch.delenv("NEGLECT_RUNTIME_ROLE", raising=False)
    monkeypatch.delenv("NEGLECT_RUNTIME_ROLE_PASSWORD", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _db_roles(*arguments: str) -> Any:
    return CliRunner().invoke(cli_app, ["db", "roles", *arguments])


def _privileges(url: str, role: str, table: str) -> set[str]:
    kinds = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]
    [row] = asyncio.run(
        _fetch(
            url,
            "SELECT array_agg(k) FILTER (WHERE has_table_privilege($1, $2, k)) AS granted "
            "FROM unnest($3::text[]) AS k",
            role,
            table,
            kinds,
        )
    )
    return set(row["granted"] or [])


@pytest.mark.usefixtures("owner_cli")
def test_db_roles_grants_the_runtime_role_only_what_the_service_needs(
    database_url: str, role: str
) -> None:
    result = _db_roles("--role", role, "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["role"] == role
    assert report["created"] is True
    assert {"referral", "child", "idempotency_record", "rate_limit_counter"} <= set(
        report["domain_tables"]
    )
    assert _privileges(database_url, role, "audit_event") == {"SELECT", "INSERT"}
    assert _privileges(database_url, role, "audit_chain_head") == set()
    assert _privileges(database_url, role, "alembic_version") == set()
    for table in ("referral", "idempotency_record", "rate_limit_counter", "signing_key"):
        assert _privileges(database_url, role, table) == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    # Webhooks: what was sent and what came back stay as written; deliveries change state.
    for table in ("webhook_message", "webhook_attempt"):
        assert _privileges(database_url, role, table) == {"SELECT", "INSERT"}
    # ... not a column of them.
    [columns] = asyncio.run(
        _fetch(
            database_url,
            "SELECT array_agg(attname::text ORDER BY attname) FILTER ("
            " WHERE has_column_privilege($1, 'webhook_message', attname, 'UPDATE')) AS updatable "
            "FROM pg_attribute WHERE attrelid = 'webhook_message'::regclass AND attnum > 0 "
            "AND NOT attisdropped",
            role,
        )
    )
    assert columns["updatable"] is None
    # A subscription ends by its status; its deliveries name it without a foreign key.
    assert _privileges(database_url, role, "webhook_subscription") == {"SELECT", "INSERT", "UPDATE"}
    for table in ("webhook_delivery", "webhook_worker"):
        assert _privileges(database_url, role, table) == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    [attributes] = asyncio.run(
        _fetch(
            database_url,
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
            "WHERE rolname = $1",
            role,
        )
    )
    assert dict(attributes) == {
        "rolcanlogin": True,
        "rolsuper": False,
        "rolcreaterole": False,
        "rolcreatedb": False,
    }


@pytest.mark.usefixtures("owner_cli")
def test_a_second_run_takes_back_what_was_granted_by_hand(database_url: str, role: str) -> None:
    assert _db_roles("--role", role).exit_code == 0
    asyncio.run(_fetch(database_url, f'GRANT ALL ON audit_event, audit_chain_head TO "{role}"'))
    assert "UPDATE" in _privileges(database_url, role, "audit_event")

    result = _db_roles("--role", role)

    assert result.exit_code == 0, result.output
    assert f"runtime role {role} exists" in result.output
    assert _privileges(database_url, role, "audit_event") == {"SELECT", "INSERT"}
    assert _privileges(database_url, role, "audit_chain_head") == set()


@pytest.mark.usefixtures("owner_cli")
def test_the_password_setting_gives_the_role_a_password(
    database_url: str, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEGLECT_RUNTIME_ROLE_PASSWORD", "it's a pass'word")
    get_settings.cache_clear()

    result = _db_roles("--role", role, "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["password_set"] is True
    [row] = asyncio.run(
        _fetch(database_url, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
    )
    assert row["rolpassword"].startswith("SCRAM-SHA-256$")


@pytest.mark.usefixtures("owner_cli")
def test_a_superuser_cannot_be_the_runtime_role() -> None:
    result = _db_roles("--role", "postgres")

    assert result.exit_code == 2
    assert "cannot be the runtime role" in result.output


@pytest.mark.usefixtures("owner_cli")
def test_a_role_that_can_create_roles_cannot_be_the_runtime_role(
    database_url: str, role: str
) -> None:
    asyncio.run(_fetch(database_url, f'CREATE ROLE "{role}" LOGIN CREATEROLE'))

    result = _db_roles("--role", role)

    assert result.exit_code == 2
    assert "CREATEROLE" in result.output
    assert _privileges(database_url, role, "audit_event") == set()


@pytest.mark.usefixtures("owner_cli")
def test_a_role_name_that_needs_quoting_is_refused() -> None:
    result = _db_roles("--role", 'app"; DROP TABLE audit_event; --')

    assert result.exit_code == 2
    assert "not a plain role name" in result.output


def test_concurrent_runs_for_one_new_role_all_succeed(database_url: str, role: str) -> None:
    async def run_once() -> bool:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(async_url(database_url))
        try:
            async with transaction(create_session_factory(engine)) as session:
                return (await ensure_runtime_role(session, role)).created
        finally:
            await engine.dispose()

    async def race() -> list[bool]:
        return list(await asyncio.gather(*(run_once() for _ in range(4))))

    created = asyncio.run(race())

    assert created.count(True) == 1
    assert _privileges(database_url, role, "audit_event") == {"SELECT", "INSERT"}


@pytest.mark.usefixtures("owner_cli")
def test_migrate_connects_as_the_owner() -> None:
    result = CliRunner().invoke(cli_app, ["migrate"])

    assert result.exit_code == 0, result.output
    assert "database migrated to head" in result.output


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, "neglect_app"),
        ({"database_url": "postgresql://svc@db/neglect"}, "neglect_app"),
        (
            {
                "database_url": "postgresql://svc:pw@db/neglect",
                "owner_database_url": "postgresql://owner@db/neglect",
            },
            "svc",
        ),
        (
            {
                "database_url": "postgresql://svc@db/neglect",
                "owner_database_url": "postgresql://owner@db/neglect",
                "runtime_role": "named",
            },
            "named",
        ),
    ],
)
def test_the_runtime_role_is_named_by_the_setting_else_by_database_url(
    environment: dict[str, str], expected: str
) -> None:
    settings = Settings.model_validate(
        {"database_url": None, "owner_database_url": None, "runtime_role": None} | environment
    )

    assert runtime_role_name(settings) == expected
