"""`neglect-service`: serve, migrate, manage clients and toolkits, generate demo data."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth import clients as registry
from service.auth.scopes import SCOPES, parse_scopes
from service.db import create_engine, create_session_factory, database_url, transaction
from service.errors import DomainError
from service.settings import get_settings

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
clients_app = typer.Typer(help="Register, list and disable API clients.", no_args_is_help=True)
db_app = typer.Typer(help="The embedded development database.", no_args_is_help=True)
app.add_typer(clients_app, name="clients")
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_CLIENT_NAME = "Demonstration client"


def _with_session(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(get_settings())
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


def _resolved_url() -> str:
    url = database_url(get_settings())
    # Child processes (alembic, uvicorn workers) must reach the same server.
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    return url


def _alembic_ini() -> Path:
    """alembic.ini from NEGLECT_ALEMBIC_INI, the working directory (the image's /app) or the
    source tree; an installed package has no migrations of its own."""
    candidates = [
        Path(os.environ["NEGLECT_ALEMBIC_INI"]) if os.environ.get("NEGLECT_ALEMBIC_INI") else None,
        Path.cwd() / "alembic.ini",
        PROJECT_ROOT / "alembic.ini",
    ]
    for candidate in candidates:
        if (
            candidate is not None
            and candidate.is_file()
            and (candidate.parent / "alembic").is_dir()
        ):
            return candidate
    raise typer.BadParameter("alembic.ini not found: run from the project (or image) folder")


def migrate_database(url: str | None = None) -> None:
    from alembic.config import Config

    from alembic import command

    ini = _alembic_ini()
    config = Config(str(ini))
    config.set_main_option("script_location", str(ini.parent / "alembic"))
    config.attributes["database_url"] = url or _resolved_url()
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


@app.command()
def migrate() -> None:
    """Apply every database migration (`alembic upgrade head`)."""
    migrate_database()
    console.print("[green]database migrated to head[/green]")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    workers: Annotated[int | None, typer.Option(help="Worker processes")] = None,
) -> None:
    """Serve the API with uvicorn."""
    import uvicorn

    _resolved_url()
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


def _print_client(created: registry.CreatedClient, as_json: bool) -> None:
    client = created.client
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "client_id": client.client_id,
                    "client_secret": created.secret,
                    "name": client.name,
                    "agency_type": client.agency_type,
                    "agency_name": client.agency_name,
                    "scopes": client.allowed_scopes,
                    "issuer": client.issuer,
                }
            )
        )
        return
    table = Table(title="Client registered", show_header=False)
    table.add_row("client id", client.client_id)
    table.add_row("name", client.name)
    table.add_row("agency", f"{client.agency_name} ({client.agency_type})")
    table.add_row("scopes", " ".join(client.allowed_scopes))
    if created.secret:
        table.add_row("client secret", f"[bold]{created.secret}[/bold]  (shown once: store it now)")
    else:
        table.add_row("issuer", client.issuer or "")
    console.print(table)


@clients_app.command("create")
def clients_create(
    name: Annotated[str, typer.Option(help="What the client is, e.g. 'Northtown school MIS'")],
    agency_type: Annotated[str, typer.Option(help="front_door, school, health, police, ...")],
    agency_name: Annotated[str, typer.Option(help="The agency whose records it may see")],
    scopes: Annotated[str, typer.Option(help=f"Space-separated, from: {' '.join(SCOPES)}")],
    issuer: Annotated[
        str | None, typer.Option(help="External identity provider issuing its tokens")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="The external provider's client id (with --issuer)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Register a client; prints its id and (for our own issuer) its secret, once."""
    _resolved_url()
    created = _with_session(
        lambda session: registry.create_client(
            session,
            name=name,
            agency_type=agency_type,
            agency_name=agency_name,
            scopes=parse_scopes(scopes),
            issuer=issuer,
            client_id=client_id,
        )
    )
    _print_client(created, as_json)


@clients_app.command("list")
def clients_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """List registered clients."""
    _resolved_url()
    clients = _with_session(registry.list_clients)
    if as_json:
        rows: list[dict[str, Any]] = [
            {
                "client_id": c.client_id,
                "name": c.name,
                "agency_type": c.agency_type,
                "agency_name": c.agency_name,
                "scopes": c.allowed_scopes,
                "enabled": c.enabled,
            }
            for c in clients
        ]
        typer.echo(json.dumps(rows))
        return
    table = Table("client id", "name", "agency", "scopes", "enabled")
    for c in clients:
        table.add_row(
            c.client_id,
            c.name,
            f"{c.agency_name} ({c.agency_type})",
            " ".join(c.allowed_scopes),
            "yes" if c.enabled else "no",
        )
    console.print(table)


@clients_app.command("disable")
def clients_disable(client_id: str) -> None:
    """Disable a client: its tokens are refused from the next request on."""
    _resolved_url()
    _with_session(lambda session: registry.disable_client(session, client_id))
    console.print(f"client {client_id} disabled")


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Prepare, then stop")] = False,
) -> None:
    """What `make run` does: database, migrations, demo toolkit, a demo client, then serve."""
    url = _resolved_url()
    migrate_database(url)
    for step in _DEV_SETUP_STEPS:
        step()

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

    created = _with_session(ensure_demo_client)
    base = f"http://127.0.0.1:{port}"
    if created is not None:
        _print_client(created, as_json=False)
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
    console.print(f"Then call the API with `-H 'Authorization: Bearer TOKEN'`; docs at {base}/docs")
    if not no_serve:
        serve(host="127.0.0.1", port=port, workers=None)


_DEV_SETUP_STEPS: list[Callable[[], None]] = []
"""Extra preparation for `dev` (e.g. loading the demonstration toolkit), registered by modules."""

from service.cli_demo import demo_data  # noqa: E402 - mounted with the toolkits commands
from service.cli_toolkits import toolkits_app  # noqa: E402 - it extends _DEV_SETUP_STEPS above

app.add_typer(toolkits_app, name="toolkits")
app.command("demo-data")(demo_data)


@app.command("purge-idempotency-keys")
def purge_idempotency_keys(
    older_than_hours: Annotated[int, typer.Option(min=24, help="Age in hours (at least 24)")] = 48,
) -> None:
    """Delete stored Idempotency-Key responses older than the given age (run it daily)."""
    from service.idempotency import purge_expired

    _resolved_url()
    deleted = _with_session(lambda session: purge_expired(session, older_than_hours))
    console.print(f"deleted {deleted} idempotency records older than {older_than_hours} h")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server, if one runs."""
    from service.embedded import stop_embedded_server

    stopped = stop_embedded_server(get_settings().embedded_pgdata)
    console.print("embedded server stopped" if stopped else "no embedded server running")


@db_app.command("url")
def db_url() -> None:
    """Print the database URL in use (starting the embedded server if needed)."""
    typer.echo(_resolved_url())


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
