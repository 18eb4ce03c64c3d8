"""`neglect-service db ...`: the embedded development database."""

from __future__ import annotations

import typer

from service.cli.common import console, err_console, resolved_url
from service.settings import get_settings

db_app = typer.Typer(help="The embedded development database.", no_args_is_help=True)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server, if one runs; exit 1 if it is still running."""
    from service.embedded import EmbeddedServerStillRunning, stop_embedded_server

    pgdata = get_settings().embedded_pgdata
    try:
        stopped = stop_embedded_server(pgdata)
    except EmbeddedServerStillRunning as exc:
        # `make clean` deletes the data folder only after this command succeeds.
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(
        f"embedded server in {pgdata} stopped" if stopped else "no embedded server running"
    )


@db_app.command("url")
def db_url() -> None:
    """Print the database URL in use (starting the embedded server if needed)."""
    typer.echo(resolved_url())
