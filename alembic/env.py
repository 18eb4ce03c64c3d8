"""Async Alembic environment. The URL is the service's direct one (`service.db.migration_url`:
never through a transaction-mode pooler), unless a caller sets one; TLS follows the settings."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from sqlalchemy.engine import Connection

from alembic import context
from service import models
from service.db import async_url, create_migration_engine, migration_url
from service.settings import get_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = models.metadata


def _url() -> str:
    configured = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    # Rendered with its password: `str(url)` would mask it as "***".
    return async_url(configured or migration_url(get_settings())).render_as_string(
        hide_password=False
    )


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=False,
        literal_binds=connection is None,
    )


def run_migrations_offline() -> None:
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_migration_engine(get_settings(), _url())
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
