"""`neglect-service indicators ...`: the indicator rollup (service.indicators.rollup)."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from service.cli.common import console, resolved_url, with_session
from service.indicators.rollup import Refreshed, refresh_rollup

indicators_app = typer.Typer(
    help="The indicator rollup: the stored cells every series is served from while exact.",
    no_args_is_help=True,
)


@indicators_app.command("refresh")
def refresh(
    if_changed: Annotated[
        bool,
        typer.Option(
            "--if-changed",
            help="Only when writes have overtaken the rollup (or it does not cover next year)",
        ),
    ] = False,
) -> None:
    """Recompute every indicator series over the whole history into the rollup, in one
    transaction; readers keep the previous cells until it commits."""
    resolved_url()

    async def work(session: AsyncSession) -> Refreshed | None:
        return await refresh_rollup(session, only_if_needed=if_changed)

    refreshed = with_session(work)
    if refreshed is None:
        console.print("rollup not refreshed: it is current, or another refresh is running")
        return
    console.print(
        f"rollup refreshed: {refreshed.series} series, {refreshed.cells:,} cells, "
        f"{refreshed.covered_from} to {refreshed.covered_to}, figures as of "
        f"{refreshed.figures_as_of.isoformat()}, in {refreshed.seconds:.1f} s"
    )
    for name, seconds in refreshed.slowest:
        console.print(f"  {seconds:7.1f} s  {name}")
