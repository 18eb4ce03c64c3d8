"""Async Alembic environment. The URL is the owner's (`NEGLECT_OWNER_DATABASE_URL`, else the
service's `DATABASE_URL`), unless a caller sets one. Behind a transaction-mode pooler the settings
require the owner's URL, a direct connection to the primary: a migration may hold session locks,
which a pooler handing each transaction to another server connection would break. TLS follows
the settings (`NEGLECT_DB_SSLMODE`, `NEGLECT_DB_SSLROOTCERT`).

Besides the tables, autogenerate and `alembic check` compare the database functions with their
current definitions, the `.sql` files beside the service's modules (alembic_utils): a changed
file gets a migration with a frozen copy of the function, and a database whose function drifted
fails the check.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic_utils.pg_function import PGFunction
from alembic_utils.replaceable_entity import register_entities
from sqlalchemy import text
from sqlalchemy.engine import Connection

from alembic import context
from service import models
from service.db import async_url, create_migration_engine, owner_database_url
from service.migrations import MIGRATION_LOCK_KEY
from service.settings import InvalidSettings, Settings, get_settings
from service.sql_functions import SqlFunction, registered_functions

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = models.metadata
# Functions only: the audit trail's triggers (migration 0001) are not registered, and every other
# entity type would be compared, and proposed for dropping, too. `PGFunction` finds the database's
# functions that no file defines any more.
register_entities(registered_functions(), entity_types=[PGFunction, SqlFunction])


def _url() -> str:
    configured = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    # Rendered with its password: `str(url)` would mask it as "***".
    if configured:
        return async_url(configured).render_as_string(hide_password=False)
    return async_url(owner_database_url(_settings())).render_as_string(hide_password=False)


def _settings() -> Settings:
    try:
        return get_settings()
    except InvalidSettings as exc:
        # `alembic upgrade head` as a release step: one line naming the variable.
        raise SystemExit(f"neglect-service: {exc}") from None


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=False,
        literal_binds=connection is None,
    )


# Transaction-scoped: held until the migrations' one transaction commits or rolls back (no
# revision leaves it with an autocommit block), released even if the process dies, and it works
# through a transaction-mode pooler, which a session lock would outlive. The versions table is read
# after it is granted, so a run that waited sees what the run before it did.
_TAKE_MIGRATION_LOCK = f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"


def run_migrations_offline() -> None:
    _configure(url=_url())
    with context.begin_transaction():
        context.execute(_TAKE_MIGRATION_LOCK)
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        connection.execute(text(_TAKE_MIGRATION_LOCK))
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_migration_engine(_settings(), _url())
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
