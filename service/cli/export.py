"""`neglect-service export children --format ndjson [--child ID]` (see `service/export.py`)."""

from __future__ import annotations

import sys
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.cli.census import cli_caller
from service.cli.common import err_console, resolved_url, with_session
from service.export import export_children

export_app = typer.Typer(help="Export records", no_args_is_help=True)


class ExportFormat(StrEnum):
    NDJSON = "ndjson"


@export_app.command("children")
def export_children_command(
    export_format: Annotated[
        ExportFormat, typer.Option("--format", help="ndjson: one JSON object per child per line")
    ] = ExportFormat.NDJSON,
    child: Annotated[
        str | None, typer.Option("--child", help="Only this child (a subject access request)")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of standard output")
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why, for the audit trail (e.g. SAR reference)")
    ] = None,
) -> None:
    """Write every child with their referrals, assessments, case events and plans, one line per
    child; with --child, one child (UK GDPR article 15). Each child exported is audited."""
    child_id = None
    if child is not None:
        try:
            child_id = uuid.UUID(child)
        except ValueError as exc:
            raise typer.BadParameter("--child is a child id (a UUID)") from exc
    resolved_url()
    progress = Progress(
        TextColumn("children"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=child_id is not None,
    )
    task = progress.add_task("children", total=None)

    async def write(session: AsyncSession) -> int:
        total = await session.scalar(text("SELECT count(*) FROM child"))
        progress.update(task, total=1 if child_id else int(total or 0))
        stream = output.open("w", encoding="utf-8") if output else sys.stdout
        written = 0
        try:
            async for line in export_children(session, cli_caller(reason), child_id):
                stream.write(line + "\n")
                written += 1
                if written % 100 == 0:
                    progress.update(task, completed=written)
        finally:
            if output:
                stream.close()
        progress.update(task, completed=written)
        return written

    with progress:
        written = with_session(write)
    err_console.print(f"exported {written:,} children ({export_format.value})")
