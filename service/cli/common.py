"""What every command shares: the consoles, the database URL in use and a session to work in."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import (
    create_engine,
    create_session_factory,
    database_url,
    owner_database_url,
    transaction,
)
from service.errors import DomainError
from service.settings import get_settings

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def with_session(work: Callable[[AsyncSession], Awaitable[T]], *, owner: bool = False) -> T:
    """Run `work` in one committed transaction, as the service's role or (`owner`) as the
    tables' owner; a domain error ends the command with exit 2."""

    async def run() -> T:
        settings = get_settings()
        engine = (
            create_engine(settings, owner_database_url(settings), direct=True)
            if owner
            else create_engine(settings)
        )
        try:
            async with transaction(create_session_factory(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except DomainError as exc:
        err_console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(2) from exc


def resolved_url() -> str:
    """The database URL in use (starting the embedded server if none is configured)."""
    settings = get_settings()
    url = database_url(settings)
    # Child processes (alembic, uvicorn workers) must reach the same server.
    os.environ["DATABASE_URL"] = url
    if settings.database_url is None:
        # ...and stay a development run, although they now see a DATABASE_URL.
        os.environ.setdefault("NEGLECT_ENV", settings.env)
    get_settings.cache_clear()
    return url


def resolved_owner_url() -> str:
    """The owner's URL in use (`NEGLECT_OWNER_DATABASE_URL`, else the service's own)."""
    resolved_url()
    return owner_database_url(get_settings())
