"""`neglect-service worker`: deliver the webhooks' outbox (service.webhooks.worker), and keep the
indicator rollup refreshed (service.indicators.rollup)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from service.auth.key_encryption import key_encryption_key
from service.cli.common import console, resolved_url
from service.db import create_engine, create_pool, create_session_factory
from service.indicators.rollup import refresh_periodically
from service.logs import configure_logging
from service.settings import get_settings
from service.webhooks.worker import REQUEST_TIMEOUT_S, DeliveryWorker


def worker(
    once: Annotated[
        bool,
        typer.Option("--once", help="Deliver what is due now, then exit (for a cron job)"),
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, max=1000, help="Deliveries claimed and sent together")
    ] = 100,
    concurrency: Annotated[
        int, typer.Option(min=1, max=1000, help="Requests of a batch in flight at once")
    ] = 20,
    lease_s: Annotated[
        float,
        typer.Option(
            min=20.0, help="Seconds a claimed delivery stays this worker's before another may"
        ),
    ] = 90.0,
    refresh_indicators: Annotated[
        bool,
        typer.Option(
            help="Also refresh the indicator rollup after writes, checking every "
            "NEGLECT_INDICATOR_REFRESH_INTERVAL_S seconds (not with --once)",
        ),
    ] = True,
) -> None:
    """Deliver webhooks until SIGTERM or SIGINT, which finish the batch in flight (or release it
    after 20 s). Run as many as needed: they never claim the same delivery."""
    # Every wave of a batch may take the whole request timeout; the lease must outlast them all.
    waves = -(-batch_size // concurrency)
    if lease_s < (waves + 1) * REQUEST_TIMEOUT_S:
        raise typer.BadParameter(
            f"a batch of {batch_size}, {concurrency} at a time, can take {waves} x "
            f"{REQUEST_TIMEOUT_S:g} s: give a lease of at least "
            f"{(waves + 1) * REQUEST_TIMEOUT_S:g} s",
            param_hint="--lease-s",
        )
    url = resolved_url()
    settings = get_settings()
    configure_logging(settings.log_level)
    # httpx would log every receiver's URL, which may carry the receiver's own token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    kek = key_encryption_key(settings)

    async def run() -> int:
        pool = await create_pool(settings, url)
        delivery = DeliveryWorker(
            pool,
            settings,
            kek,
            batch_size=batch_size,
            concurrency=concurrency,
            lease_s=lease_s,
        )
        try:
            if once:
                return await delivery.run_once()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            engine = create_engine(settings, url)
            refreshing = asyncio.create_task(
                refresh_periodically(
                    create_session_factory(engine),
                    settings.indicator_refresh_interval_s,
                    stop,
                    jobs=settings.indicator_refresh_jobs,
                )
                if refresh_indicators
                else stop.wait()
            )
            try:
                await delivery.run(stop)
            finally:
                # A refresh in flight is rolled back: the next worker's loop makes it again.
                refreshing.cancel()
                await asyncio.gather(refreshing, return_exceptions=True)
                await engine.dispose()
            return delivery.stats.succeeded + delivery.stats.failed
        finally:
            await delivery.aclose()
            await pool.close()

    attempted = asyncio.run(run())
    console.print(f"webhook worker stopped after {attempted} delivery attempts")
