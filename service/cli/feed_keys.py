"""`neglect-service feed-keys ...`: issue, list, rotate and revoke the feed keys BI tools use."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from service.auth import feed_keys
from service.cli.common import console, resolved_url, with_session

feed_keys_app = typer.Typer(
    help="Issue, list, rotate and revoke feed keys (read-only keys for Power BI and Excel).",
    no_args_is_help=True,
)


def _print_issued(issued: feed_keys.IssuedFeedKey, as_json: bool) -> None:
    key = issued.feed_key
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "key_id": key.key_id,
                    "client_id": key.client_id,
                    "name": key.name,
                    "feed_key": issued.key,
                }
            )
        )
        return
    table = Table(title="Feed key issued", show_header=False)
    table.add_row("key id", key.key_id)
    table.add_row("client id", key.client_id)
    table.add_row("name", key.name)
    table.add_row("feed key", f"[bold]{issued.key}[/bold]  (shown once: store it now)")
    console.print(table)


@feed_keys_app.command("create")
def feed_keys_create(
    client_id: Annotated[str, typer.Argument(help="A client holding indicators:read")],
    name: Annotated[str, typer.Option(help="What it is for, e.g. 'Power BI: dashboard'")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Issue a feed key for a client; prints it once."""
    resolved_url()
    issued = with_session(lambda session: feed_keys.create_feed_key(session, client_id, name))
    _print_issued(issued, as_json)


@feed_keys_app.command("list")
def feed_keys_list(
    client_id: Annotated[str | None, typer.Argument(help="Only this client's keys")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """List feed keys (never the keys themselves), revoked ones included."""
    resolved_url()
    keys = with_session(lambda session: feed_keys.list_feed_keys(session, client_id))
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "key_id": key.key_id,
                        "client_id": key.client_id,
                        "name": key.name,
                        "key_hint": key.key_hint,
                        "revoked": key.revoked_at is not None,
                    }
                    for key in keys
                ]
            )
        )
        return
    table = Table("key id", "client id", "name", "starts", "revoked")
    for key in keys:
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "no"
        table.add_row(key.key_id, key.client_id, key.name, key.key_hint + "…", revoked)
    console.print(table)


@feed_keys_app.command("revoke")
def feed_keys_revoke(key_id: str) -> None:
    """Revoke a feed key: refused from the next request on."""
    resolved_url()
    with_session(lambda session: feed_keys.revoke_feed_key(session, key_id))
    console.print(f"feed key {key_id} revoked")


@feed_keys_app.command("rotate")
def feed_keys_rotate(
    key_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Revoke a feed key and issue its replacement (printed once)."""
    resolved_url()
    issued = with_session(lambda session: feed_keys.rotate_feed_key(session, key_id))
    _print_issued(issued, as_json)
