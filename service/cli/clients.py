"""`neglect-service clients ...`: register, list, disable and enable API clients, and rotate
their secrets."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from service.auth import clients as registry
from service.auth.scopes import SCOPES, parse_scopes
from service.cli.common import console, resolved_url, with_session

clients_app = typer.Typer(
    help="Register, list, disable and enable API clients; rotate their secrets.",
    no_args_is_help=True,
)


def print_client(created: registry.CreatedClient, as_json: bool) -> None:
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
    resolved_url()
    created = with_session(
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
    print_client(created, as_json)


@clients_app.command("list")
def clients_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """List registered clients."""
    resolved_url()
    clients = with_session(registry.list_clients)
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
    resolved_url()
    with_session(lambda session: registry.disable_client(session, client_id))
    console.print(f"client {client_id} disabled")


@clients_app.command("enable")
def clients_enable(client_id: str) -> None:
    """Enable a disabled client again, with the secret it had (rotate it if it leaked)."""
    resolved_url()
    with_session(lambda session: registry.enable_client(session, client_id))
    console.print(f"client {client_id} enabled")


@clients_app.command("rotate-secret")
def clients_rotate_secret(
    client_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Give a client a new secret, printed once; the old one stops working at once."""
    resolved_url()
    rotated = with_session(lambda session: registry.rotate_client_secret(session, client_id))
    if as_json:
        typer.echo(json.dumps({"client_id": client_id, "client_secret": rotated.secret}))
        return
    console.print(f"client {client_id} has a new secret (shown once: store it now):")
    console.print(f"[bold]{rotated.secret}[/bold]", soft_wrap=True)
