"""`neglect-service db ...`: the embedded development database."""

from __future__ import annotations

import typer

from service.cli.common import console, resolved_url
from service.settings import get_settings

db_app = typer.Typer(help="The embedded development database.", no_args_is_help=True)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server, if one runs."""
    from service.embedded import stop_embedded_server

    stopped = stop_embedded_server(get_settings().embedded_pgdata)
    console.print("embedded server stopped" if stopped else "no embedded server running")


@db_app.command("url")
def db_url() -> None:
    """Print the database URL in use (starting the embedded server if needed)."""
    typer.echo(resolved_url())
