"""`neglect-service indicators ...`: the indicator rollup (service.indicators.rollup)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from service.cli.common import console, resolved_url
from service.db import create_engine, create_session_factory, transaction
from service.indicators.rollup import Refreshed, refresh_rollup
from service.settings import get_settings

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
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=32,
            help="Sessions computing series at once (default NEGLECT_INDICATOR_REFRESH_JOBS)",
        ),
    ] = None,
) -> None:
    """Recompute every indicator series over the whole history into the rollup, in one
    transaction; readers keep the previous cells until it commits."""
    resolved_url()
    settings = get_settings()

    async def run() -> Refreshed | None:
        engine = create_engine(settings)
        factory = create_session_factory(engine)
        try:
            async with transaction(factory) as session:
                return await refresh_rollup(
                    session,
                    only_if_needed=if_changed,
                    helpers=factory,
                    jobs=jobs or settings.indicator_refresh_jobs,
                )
        finally:
            await engine.dispose()

    refreshed = asyncio.run(run())
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
