"""`neglect-service`: serve, deliver webhooks, migrate, set up the runtime role, manage clients,
feed keys, toolkits and signing keys, verify the audit trail, generate demo data, import history
(CIN census, NDJSON) and export children."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth import clients as registry
from service.auth.scopes import SCOPES
from service.cli.audit import audit_app
from service.cli.census import import_app
from service.cli.clients import clients_app, print_client
from service.cli.common import console, resolved_owner_url, resolved_url, with_session
from service.cli.db import db_app, describe_runtime_role, setup_runtime_role
from service.cli.demo import demo_data
from service.cli.export import export_app
from service.cli.feed_keys import feed_keys_app
from service.cli.indicators import indicators_app
from service.cli.keys import keys_app
from service.cli.toolkits import toolkits_app, toolkits_load_demo
from service.cli.worker import worker
from service.db_roles import runtime_database_url
from service.migrations import MigrationsNotFound, migrate_database
from service.settings import InvalidSettings, get_settings

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(clients_app, name="clients")
app.add_typer(toolkits_app, name="toolkits")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(feed_keys_app, name="feed-keys")
app.add_typer(audit_app, name="audit")
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")
app.add_typer(indicators_app, name="indicators")
app.command("demo-data")(demo_data)
app.command("worker")(worker)

DEMO_CLIENT_NAME = "Demonstration client"


def _migrate(url: str) -> None:
    try:
        migrate_database(url)
    except MigrationsNotFound as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command()
def migrate() -> None:
    """Apply every database migration (`alembic upgrade head`) as the owner of the tables
    (NEGLECT_OWNER_DATABASE_URL, else DATABASE_URL; behind a transaction-mode pooler the
    owner's URL is required and goes to the primary directly); then run `db roles`."""
    _migrate(resolved_owner_url())
    console.print("[green]database migrated to head[/green]")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    workers: Annotated[int | None, typer.Option(help="Worker processes")] = None,
) -> None:
    """Serve the API with uvicorn."""
    import uvicorn

    resolved_url()
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers or get_settings().workers,
        access_log=False,
        log_config=None,
        proxy_headers=True,
    )


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Prepare, then stop")] = False,
    allow_all_scopes_demo_client: Annotated[
        bool,
        typer.Option(
            "--allow-all-scopes-demo-client",
            help="Create the demo client (every scope, admin included) on a database set by "
            "DATABASE_URL too; without it, only on the embedded one",
        ),
    ] = False,
) -> None:
    """What `make run` does: database, migrations, the runtime role, demo toolkit, a demo client,
    then serve as the runtime role."""
    # The demo client can do everything, admin included, and its secret goes to the terminal:
    # harmless on the embedded server only this machine reaches, a full-access credential made
    # as a side effect on a shared or production database. Read before resolved_url() sets
    # DATABASE_URL for the embedded server too.
    embedded = get_settings().database_url is None
    # A development run even against a DATABASE_URL: the checkout's own key-encryption key
    # (.secrets/) is used unless one is configured. An explicit NEGLECT_ENV still wins.
    os.environ.setdefault("NEGLECT_ENV", "development")
    # The metadata, our tokens' `iss` and the lines printed below name this port, unless a
    # public URL is configured (a proxy in front, say). Set in the environment so that the
    # server's processes see it too.
    os.environ.setdefault("NEGLECT_PUBLIC_URL", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    url = resolved_url()
    owner_url = resolved_owner_url()
    _migrate(owner_url)
    if embedded or owner_url != url:
        runtime = setup_runtime_role()
        console.print(describe_runtime_role(runtime), soft_wrap=True, highlight=False)
        if embedded:
            # From here on (demo data below, the server and its workers) the service connects
            # as the runtime role; trust authentication on the server's socket needs no password.
            password = get_settings().runtime_role_password
            os.environ["NEGLECT_OWNER_DATABASE_URL"] = owner_url
            os.environ["DATABASE_URL"] = runtime_database_url(
                owner_url, runtime.name, password.get_secret_value() if password else None
            )
            get_settings.cache_clear()
    else:
        console.print(
            "[yellow]Serving as the owner of the tables,[/yellow] which could disable the audit"
            " trail's triggers: set NEGLECT_OWNER_DATABASE_URL to the owner and DATABASE_URL to"
            " a runtime role (`neglect-service db roles`).",
            soft_wrap=True,
        )
    toolkits_load_demo(as_json=False)
    base = get_settings().base_url
    if embedded or allow_all_scopes_demo_client:
        _print_demo_client(base)
    else:
        console.print(
            "[yellow]No demonstration client made:[/yellow] DATABASE_URL names a database other"
            " than the embedded one, and that client would hold every scope, admin included."
            " Register a client with the scopes you need (`neglect-service clients create`),"
            " or pass --allow-all-scopes-demo-client if this database is yours to test on.",
            soft_wrap=True,
        )
    console.print(f"Then call the API with `-H 'Authorization: Bearer TOKEN'`; docs at {base}/docs")
    if not no_serve:
        serve(host="127.0.0.1", port=port, workers=None)


def _print_demo_client(base: str) -> None:
    """Create the demonstration client unless it exists, and say how to get a token."""

    async def ensure_demo_client(session: AsyncSession) -> registry.CreatedClient | None:
        existing = [c for c in await registry.list_clients(session) if c.name == DEMO_CLIENT_NAME]
        if existing:
            return None
        return await registry.create_client(
            session,
            name=DEMO_CLIENT_NAME,
            agency_type="front_door",
            agency_name="Demonstration Children's Front Door",
            scopes=list(SCOPES),
        )

    created = with_session(ensure_demo_client)
    if created is not None:
        print_client(created, as_json=False)
        console.print("Get a token:")
        console.print(
            f"  curl -s -u '{created.client.client_id}:{created.secret}' "
            f"-d grant_type=client_credentials {base}/oauth/token",
            soft_wrap=True,
        )
    else:
        console.print(
            "The demonstration client exists already (`neglect-service clients list`); its"
            " secret was shown when it was created. Register another with"
            " `neglect-service clients create`."
        )


@app.command("purge-idempotency-keys")
def purge_idempotency_keys(
    older_than_hours: Annotated[int, typer.Option(min=24, help="Age in hours (at least 24)")] = 48,
) -> None:
    """Delete stored Idempotency-Key responses older than the given age (run it daily)."""
    from service.idempotency import purge_expired

    resolved_url()
    deleted = with_session(lambda session: purge_expired(session, older_than_hours))
    console.print(f"deleted {deleted} idempotency records older than {older_than_hours} h")


def main() -> None:
    """The console entry point: a bad setting ends the command with one line, not a traceback."""
    try:
        app()
    except InvalidSettings as exc:
        # Plain print: rich would wrap a long line.
        print(f"neglect-service: {exc}", file=sys.stderr)
        sys.exit(2)
