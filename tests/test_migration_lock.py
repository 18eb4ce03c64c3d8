"""Migrations are serialised by a PostgreSQL advisory lock: a release step started while another
runs waits for it, then finds the schema at head (the Kubernetes migration Job, a retried Job, or
two releases at once)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from service.migrations import MIGRATION_LOCK_KEY, alembic_ini, migrate_database

WAIT_S = 2.0
ROOT = Path(__file__).resolve().parent.parent


def plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config(str(alembic_ini()))
    config.set_main_option("script_location", str(alembic_ini().parent / "alembic"))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def fetch_versions(url: str) -> list[str]:
    connection = await asyncpg.connect(plain(url))
    try:
        exists = await connection.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
        if not exists:
            return []
        rows = await connection.fetch("SELECT version_num FROM alembic_version")
        return [row["version_num"] for row in rows]
    finally:
        await connection.close()


@pytest.fixture
def empty_database_url(database_url: str) -> Iterator[str]:
    """An empty database beside the worker's, dropped afterwards."""
    name = f"{make_url(database_url).database}_lock"

    async def execute(statement: str) -> None:
        connection = await asyncpg.connect(plain(database_url))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class MigrationThread(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            migrate_database(self.url)
        except BaseException as exc:
            self.error = exc


def test_a_migration_waits_while_another_holds_the_lock(empty_database_url: str) -> None:
    async def hold_the_lock_while(work: MigrationThread) -> list[str]:
        holder = await asyncpg.connect(plain(empty_database_url))
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
            work.start()
            await asyncio.sleep(WAIT_S)
            assert work.is_alive(), "the migration did not wait for the lock"
            during = await fetch_versions(empty_database_url)
            await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
            return during
        finally:
            await holder.close()

    migration = MigrationThread(empty_database_url)
    during = asyncio.run(hold_the_lock_while(migration))
    migration.join(timeout=120)

    assert during == []
    assert not migration.is_alive()
    assert migration.error is None
    assert asyncio.run(fetch_versions(empty_database_url)) == [head_revision()]


def test_two_migrations_started_together_both_succeed(empty_database_url: str) -> None:
    """Two processes, like two release Jobs (Alembic's context is global to a process)."""
    script = (
        "import sys; from service.migrations import migrate_database; migrate_database(sys.argv[1])"
    )
    runs = [
        subprocess.Popen(  # noqa: S603 (our own interpreter, no shell)
            [sys.executable, "-c", script, empty_database_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [run.communicate(timeout=120) for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outcomes
    assert asyncio.run(fetch_versions(empty_database_url)) == [head_revision()]
