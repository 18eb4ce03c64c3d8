"""Engine and sessions. Nothing connects at import time: the lifespan calls `create_engine`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import URL, make_url
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


def create_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    """An asyncpg engine whose pool notices a restarted server (pre-ping) and bounds every wait."""
    return create_async_engine(
        async_url(url or database_url(settings)),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_pre_ping=True,
        connect_args={
            "timeout": 5,
            "command_timeout": settings.db_statement_timeout_ms / 1000 + 5,
            "server_settings": {
                "application_name": "neglect-service",
                "statement_timeout": str(settings.db_statement_timeout_ms),
            },
        },
    )


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed on success and rolled back on error (CLI and worker)."""
    async with factory() as session, session.begin():
        yield session
