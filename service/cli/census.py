"""`neglect-service import cin-census FILE.xml` and `neglect-service import children FILE.ndjson`.

See `service/census/` for what an import does and `service/export.py` for the NDJSON format.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.caller import Caller
from service.census import (
    CensusFileRefused,
    ImportReport,
    Problem,
    Workers,
    default_workers,
    import_census_file,
)
from service.cli.common import console, err_console, resolved_url, with_session
from service.db import create_engine, create_session_factory, database_url
from service.export import RestoreSummary, restore_children
from service.settings import get_settings

import_app = typer.Typer(
    help="Import history: the CIN census, or an NDJSON export", no_args_is_help=True
)


def cli_caller(access_reason: str | None = None) -> Caller:
    """Who the audit trail says acted: the command line, as the operating-system user."""
    user = getpass.getuser()
    return Caller(
        client_id="neglect-service-cli",
        agency_type="local_authority",
        agency_name=f"command line ({user})"[:200],
        scopes=frozenset({"admin"}),
        access_reason=access_reason,
    )


def print_problems(problems: list[Problem], title: str) -> None:
    """The per-child report: which child, which item, what is wrong."""
    table = Table(title=title)
    table.add_column("child (LAchildID)")
    table.add_column("item")
    table.add_column("problem")
    for problem in problems:
        table.add_row(problem.child or "(the file)", problem.item, problem.message)
    err_console.print(table)


def _print_report(report: ImportReport) -> None:
    verb = "Checked" if report.dry_run else "Imported"
    table = Table(title=f"{verb} CIN census {report.census_year}, LA {report.la_code}")
    table.add_column("")
    table.add_column("", justify="right")
    rows = [
        ("children in the file", report.children_in_file),
        ("children imported or up to date", report.children_imported),
        ("children with something new", report.children_changed),
        ("children left out", report.children_skipped),
        ("referrals (episodes) created", report.referrals_created),
        ("referrals (episodes) updated", report.referrals_updated),
    ]
    rows += [
        (f"{name.replace('_', ' ')} events", n) for name, n in sorted(report.events_created.items())
    ]
    for name, value in rows:
        table.add_row(name, f"{value:,}")
    console.print(table)
    if report.already_imported:
        console.print("This file (same SHA-256) was imported before.")
    processes = f", {report.worker_processes} worker processes" if report.worker_processes else ""
    console.print(
        f"{report.children_in_file:,} children in {report.seconds:.1f} s "
        f"({report.children_per_second:,.0f} children/s{processes}); file SHA-256 {report.sha256}"
    )


@import_app.command("cin-census")
def import_cin_census(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and check the file; store nothing")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            max=32,
            help="Worker processes reading and storing the file (0: this process only); "
            "default one per CPU",
        ),
    ] = default_workers(),
) -> None:
    """Import a DfE Children in Need census XML file (2017-18 to 2024-25). A child that fails a
    check is left out whole and reported; the rest is imported. Importing a file again changes
    nothing; the next year's file adds what is new. Exit status 1 when children were left out,
    2 when the file itself was refused."""
    resolved_url()
    progress = Progress(
        TextColumn("children"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=as_json,
    )
    task = progress.add_task("children", total=None)

    async def run() -> ImportReport:
        settings = get_settings()
        engine = create_engine(settings)
        try:
            return await import_census_file(
                create_session_factory(engine),
                file,
                cli_caller(),
                dry_run=dry_run,
                workers=Workers(workers, settings, database_url(settings)) if workers else None,
                on_start=lambda total: progress.update(task, total=total),
                on_progress=lambda done: progress.update(task, completed=done),
            )
        finally:
            await engine.dispose()

    try:
        with progress:
            report = asyncio.run(run())
    except CensusFileRefused as refused:
        if as_json:
            typer.echo(json.dumps({"refused": [_problem_json(p) for p in refused.problems]}))
        else:
            print_problems(refused.problems, "The file was refused; nothing was stored")
        raise typer.Exit(2) from refused
    if as_json:
        typer.echo(json.dumps(report.as_json()))
    else:
        _print_report(report)
        if report.problems:
            print_problems(report.problems, "Children left out (nothing of them was stored)")
    if report.problems:
        raise typer.Exit(1)


def _problem_json(problem: Problem) -> dict[str, str | None]:
    return {"child": problem.child, "item": problem.item, "message": problem.message}


@import_app.command("children")
def import_children(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Restore an NDJSON export (`neglect-service export children`) into a database that does not
    hold its records: every record keeps its id. All or nothing. As the owner of the tables (it
    moves the category changes' identity sequence past the ids it restores)."""
    resolved_url()

    async def restore(session: AsyncSession) -> RestoreSummary:
        with file.open("rb") as lines:
            return await restore_children(session, lines)

    summary = with_session(restore, owner=True)
    if as_json:
        typer.echo(json.dumps({"children": summary.children, "rows": summary.rows}))
        return
    table = Table(title=f"Restored {summary.children:,} children")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in summary.rows.items():
        table.add_row(name, f"{count:,}")
    console.print(table)
