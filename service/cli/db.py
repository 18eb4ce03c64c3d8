"""`neglect-service db ...`: the embedded development database and the runtime role."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from service.cli.common import console, err_console, resolved_owner_url, resolved_url, with_session
from service.db_roles import (
    NARROW_GRANTS,
    RuntimeRole,
    RuntimeRoleRefused,
    ensure_runtime_role,
    runtime_role_name,
    url_user,
)
from service.settings import get_settings

db_app = typer.Typer(
    help="The embedded development database and the runtime role.", no_args_is_help=True
)


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


def setup_runtime_role(role: str | None = None) -> RuntimeRole:
    """Create and grant the runtime role as the owner; a refusal ends the command with exit 2."""
    resolved_owner_url()
    settings = get_settings()
    password = settings.runtime_role_password
    try:
        name = role or runtime_role_name(settings)
        return with_session(
            lambda session: ensure_runtime_role(
                session,
                name,
                password.get_secret_value() if password else None,
                settings.db_statement_timeout_ms,
            ),
            owner=True,
        )
    except RuntimeRoleRefused as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from exc


def describe_runtime_role(result: RuntimeRole) -> str:
    narrow = "; ".join(
        f"{', '.join(privileges) or 'nothing'} on {table}"
        for table, privileges in NARROW_GRANTS.items()
    )
    return (
        f"runtime role {result.name} {'created' if result.created else 'exists'}"
        f"{', password set' if result.password_set else ''}: SELECT, INSERT, UPDATE, DELETE on "
        f"{len(result.domain_tables)} tables of {result.database}.{result.schema}; {narrow}"
        + (
            f"; statement_timeout {result.statement_timeout_ms} ms"
            if result.statement_timeout_ms is not None
            else ""
        )
    )


@db_app.command("roles")
def db_roles(
    role: Annotated[
        str | None,
        typer.Option(
            help="The runtime role. Default: NEGLECT_RUNTIME_ROLE; else the user of DATABASE_URL "
            "when NEGLECT_OWNER_DATABASE_URL is set apart from it; else neglect_app"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Create (unless it exists) the runtime role the service connects as, and grant it only
    what the service needs: nothing that can alter or empty the audit trail. Run it as the owner
    (NEGLECT_OWNER_DATABASE_URL), after every `migrate`; NEGLECT_RUNTIME_ROLE_PASSWORD sets its
    password, and NEGLECT_DB_STATEMENT_TIMEOUT_MS its statement timeout in this database (which
    a transaction-mode pooler cannot carry as a connection parameter)."""
    result = setup_runtime_role(role)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "role": result.name,
                    "created": result.created,
                    "password_set": result.password_set,
                    "database": result.database,
                    "schema": result.schema,
                    "owner": result.owner,
                    "domain_tables": result.domain_tables,
                    "statement_timeout_ms": result.statement_timeout_ms,
                    "narrow_grants": {table: list(p) for table, p in NARROW_GRANTS.items()},
                }
            )
        )
        return
    console.print(escape(describe_runtime_role(result)), soft_wrap=True, highlight=False)
    if url_user(resolved_url()) != result.name:
        console.print(
            f"[yellow]DATABASE_URL does not connect as {escape(result.name)}:[/yellow] the service"
            " connects as the role DATABASE_URL names. Point DATABASE_URL at the runtime role and"
            " NEGLECT_OWNER_DATABASE_URL at the owner.",
            soft_wrap=True,
        )
