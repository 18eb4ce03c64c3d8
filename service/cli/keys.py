"""`neglect-service keys ...`: rotate and list the built-in issuer's signing keys."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from service.auth.key_encryption import KeyEncryptionKey, SigningKeyError, key_encryption_key
from service.auth.keys import list_signing_keys, retired_key_window_s, rotate_signing_key
from service.cli.common import console, err_console, resolved_url, with_session
from service.settings import get_settings

keys_app = typer.Typer(help="The built-in issuer's signing keys.", no_args_is_help=True)


def _key_encryption_key() -> KeyEncryptionKey:
    try:
        return key_encryption_key(get_settings())
    except SigningKeyError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from exc


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _minute(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else ""


@keys_app.command("rotate")
def keys_rotate(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Make a new signing key; the old one stops signing but stays in the JWKS until its tokens
    have expired. Every replica signs with the new key within the reload interval (60 s)."""
    resolved_url()
    kek = _key_encryption_key()
    window_s = retired_key_window_s(get_settings())
    rotation = with_session(lambda session: rotate_signing_key(session, kek, window_s))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "kid": rotation.new_kid,
                    "retired": rotation.retired_kids,
                    "deleted": rotation.deleted_kids,
                    "retired_published_for_s": window_s,
                }
            )
        )
        return
    console.print(f"new signing key {rotation.new_kid}")
    for kid in rotation.retired_kids:
        console.print(f"  retired {kid}: still in the JWKS for {window_s} s")
    for kid in rotation.deleted_kids:
        console.print(f"  deleted {kid}: retired long enough that no token it signed is valid")


@keys_app.command("list")
def keys_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """List the stored signing keys, newest first, and until when each is published."""
    resolved_url()
    window = timedelta(seconds=retired_key_window_s(get_settings()))
    keys = with_session(list_signing_keys)
    if as_json:
        rows: list[dict[str, Any]] = [
            {
                "kid": key.kid,
                "algorithm": key.algorithm,
                "kek_id": key.kek_id,
                "created_at": _iso(key.created_at),
                "retired_at": _iso(key.retired_at),
                "published_until": _iso(key.retired_at + window) if key.retired_at else None,
            }
            for key in keys
        ]
        typer.echo(json.dumps(rows))
        return
    table = Table()
    table.add_column("kid", no_wrap=True)
    table.add_column("state")
    table.add_column("created", no_wrap=True)
    table.add_column("published until", no_wrap=True)
    table.add_column("KEK id", no_wrap=True)
    for key in keys:
        table.add_row(
            key.kid,
            "retired" if key.retired_at else "signing",
            _minute(key.created_at),
            _minute(key.retired_at + window) if key.retired_at else "",
            key.kek_id,
        )
    console.print(table)
