"""Every series the catalogue offers (each indicator, period and breakdown) is computed by valid SQL
and comes back as whole periods of zeros over a range in which no test records anything, so this
module needs no cleared tables."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
from fastapi import FastAPI

from schemas.indicators import Breakdown, Period
from service.indicators.catalogue import load_catalogue
from service.indicators.periods import period_bounds
from service.indicators.sql import FIXED_GROUPS
from tests.builders.indicators import fetch_series
from tests.conftest import ClientMaker, RegisteredClient

EVERY_COMBINATION: list[tuple[str, Period, Breakdown | None]] = [
    (meta.id, period, breakdown)
    for meta in load_catalogue().values()
    for period in meta.periods
    for breakdown in (None, *meta.breakdowns)
]


@pytest.fixture(scope="module")
async def reader(app: FastAPI) -> RegisteredClient:
    # One client for the whole module: registering one (a scrypt hash) costs more than a query.
    return await ClientMaker(app)(["indicators:read"])


@pytest.mark.parametrize(("indicator_id", "period", "breakdown"), EVERY_COMBINATION)
async def test_every_offered_series_is_computed_with_zeros_on_an_empty_database(
    client: httpx.AsyncClient,
    reader: RegisteredClient,
    indicator_id: str,
    period: Period,
    breakdown: Breakdown | None,
) -> None:
    params: dict[str, str] = {"from_": "1990-01-15", "to": "1991-02-10", "period": period}
    if breakdown is not None:
        params["breakdown"] = breakdown

    series = await fetch_series(client, reader.headers, indicator_id, **params)

    buckets = period_bounds(date(1990, 1, 15), date(1991, 2, 10), period)
    fixed_groups: tuple[str | None, ...] = FIXED_GROUPS[breakdown] if breakdown else (None,)
    # Groups seen nowhere in the range (an ethnicity, an agency type) have no rows at all.
    assert [(point["label"], point["group"]) for point in series] == [
        (label, group) for _, _, label in buckets for group in fixed_groups
    ]
    assert all(point["numerator"] == 0 and not point["suppressed"] for point in series)
