"""`neglect-service audit verify`: check the audit trail's hash chains and print their heads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from service.audit_chain import (
    Anchor,
    AuditVerification,
    ChainReport,
    anchors_from_json,
    verify_audit_chains,
)
from service.cli.common import console, err_console, resolved_owner_url, with_session

audit_app = typer.Typer(help="The audit trail's hash chains.", no_args_is_help=True)


def _chain_json(chain: ChainReport) -> dict[str, Any]:
    bad = chain.first_break
    return {
        "agency_name": chain.agency_name,
        "events": chain.events,
        "intact": chain.intact,
        "head": None
        if chain.head_seq is None or chain.head_hash is None
        else {"seq": chain.head_seq, "hash": chain.head_hash.hex()},
        "first_bad": None
        if bad is None
        else {"event_id": bad.event_id, "chain_seq": bad.chain_seq, "problem": bad.problem},
    }


def _print(verification: AuditVerification) -> None:
    if not verification.chains:
        console.print("no audit events yet")
    for chain in verification.chains:
        head = (
            f"head {chain.head_seq} {chain.head_hash.hex()}"
            if chain.head_seq is not None and chain.head_hash is not None
            else "no head"
        )
        state = "[green]intact[/green]" if chain.intact else "[red]BROKEN[/red]"
        console.print(
            f"{state}  {escape(chain.agency_name)}: {chain.events} events, {head}",
            soft_wrap=True,
            highlight=False,
        )
        bad = chain.first_break
        if bad is not None:
            event = f"event {bad.event_id}" if bad.event_id is not None else "the event"
            console.print(
                f"  first bad: {event} at chain_seq {bad.chain_seq}: {escape(bad.problem)}",
                soft_wrap=True,
                highlight=False,
            )


def _read_anchors(path: Path) -> dict[str, Anchor]:
    try:
        return anchors_from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        err_console.print(
            f"[red]error:[/red] {escape(str(path))}: {escape(str(exc))}",
            soft_wrap=True,
            highlight=False,
        )
        raise typer.Exit(2) from exc


@audit_app.command("verify")
def audit_verify(
    agency: Annotated[str | None, typer.Option(help="Only this agency's chain")] = None,
    anchors: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="An earlier `audit verify --json` kept outside the database: each head in it "
            "must still be in its chain",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Walk each agency's hash chain, name its first edited, deleted or reordered event, and
    print its head (seq and sha256) to keep outside the database. Exit 1 when a chain is broken.
    Runs as the owner (NEGLECT_OWNER_DATABASE_URL): the runtime role cannot read the heads."""
    anchored = _read_anchors(anchors) if anchors is not None else None
    resolved_owner_url()
    verification = with_session(
        lambda session: verify_audit_chains(session, anchored, agency), owner=True
    )
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "intact": verification.intact,
                    "chains": [_chain_json(chain) for chain in verification.chains],
                }
            )
        )
    else:
        _print(verification)
    if not verification.intact:
        raise typer.Exit(1)
