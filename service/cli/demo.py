"""`neglect-service demo-data`: load a synthetic partnership (see `service/demo/`)."""

from __future__ import annotations

import json
import resource
import time
from datetime import date
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.common import today_in_uk
from service.cli.common import console, err_console, resolved_owner_url, with_session
from service.demo.generator import (
    DEFAULT_END,
    DEFAULT_SEED,
    DEFAULT_START,
    DemoDataConflict,
    DemoOptions,
    DemoSummary,
    load_demo_data,
)


def _cpu_seconds() -> float:
    """This process's CPU time so far, every thread (generation runs in one)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _summary_json(summary: DemoSummary, seconds: float, cpu_s: float) -> str:
    return json.dumps(
        {
            "seed": summary.seed,
            "seconds": round(seconds, 1),
            "referrals_per_second": round(summary.rows["referral"] / seconds),
            "cpu_us_per_referral": round(cpu_s / summary.rows["referral"] * 1e6),
            "start": summary.start.isoformat(),
            "end": summary.end.isoformat(),
            "toolkit": {"id": summary.toolkit_id, "version": summary.toolkit_version},
            "rows": summary.rows,
            "proportions": summary.proportions,
        }
    )


def _print_summary(summary: DemoSummary, seconds: float, cpu_s: float) -> None:
    table = Table(title=f"Demo data loaded (seed {summary.seed})")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in summary.rows.items():
        table.add_row(name, f"{count:,}")
    console.print(table)
    shares = Table(title=f"Proportions, {summary.start} to {summary.end}")
    shares.add_column("measure")
    shares.add_column("value", justify="right")
    for name, value in summary.proportions.items():
        shares.add_row(name.replace("_", " "), "-" if value is None else f"{value}")
    console.print(shares)
    console.print(f"toolkit assessments scored with {summary.toolkit_id} {summary.toolkit_version}")
    console.print(
        f"loaded {summary.rows['referral']:,} referrals with their children and events in "
        f"{seconds:.1f} s: {summary.rows['referral'] / seconds:,.0f} referrals a second "
        f"({cpu_s / summary.rows['referral'] * 1e6:,.0f} us of this command's CPU a referral, "
        "the database server's not included)"
    )


def demo_data(
    children: Annotated[int, typer.Option(min=1, help="How many children to generate")],
    seed: Annotated[int, typer.Option(help="Same seed, same data")] = DEFAULT_SEED,
    start: Annotated[
        str, typer.Option(help="First day of the records (YYYY-MM-DD)")
    ] = DEFAULT_START.isoformat(),
    end: Annotated[
        str, typer.Option(help="Last day of the records (YYYY-MM-DD), before today")
    ] = DEFAULT_END.isoformat(),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Load a synthetic partnership: children, referrals and decisions, toolkit assessments and
    case events with realistic proportions (all made up; NHS numbers from the 999 range)."""
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise typer.BadParameter("--start and --end are dates: YYYY-MM-DD") from exc
    if last >= today_in_uk():
        raise typer.BadParameter("--end must be before today: records cannot be in the future")
    try:
        options = DemoOptions(children=children, seed=seed, start=first, end=last)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    # An admin command, as the owner: the loader drops and rebuilds indexes around its COPY.
    resolved_owner_url()
    # The bar goes to stderr so that `--json` output stays clean.
    progress = Progress(
        TextColumn("children"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=as_json,
    )
    task = progress.add_task("children", total=children)

    async def load(session: AsyncSession) -> DemoSummary:
        return await load_demo_data(
            session,
            options,
            on_progress=lambda done: progress.update(task, completed=done),
            on_indexing=lambda: progress.console.print("building indexes"),
        )

    started, cpu_started = time.perf_counter(), _cpu_seconds()
    try:
        with progress:
            summary = with_session(load, owner=True)
    except DemoDataConflict as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    seconds, cpu_s = time.perf_counter() - started, _cpu_seconds() - cpu_started
    if as_json:
        typer.echo(_summary_json(summary, seconds, cpu_s))
    else:
        _print_summary(summary, seconds, cpu_s)
