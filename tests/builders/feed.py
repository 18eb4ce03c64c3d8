"""Data and credentials for the BI feed's tests: a synthetic partnership (the demo generator, so
every indicator has figures, some of them suppressed), feed keys, and the rows the JSON API gives
for the same window, to compare the feed with."""

from __future__ import annotations

import base64
from collections import Counter
from datetime import date
from typing import Any, Final

import httpx
from fastapi import FastAPI

from service.auth.feed_keys import create_feed_key
from service.db import transaction
from service.demo.generator import DemoOptions, load_demo_data
from service.indicators.catalogue import load_catalogue
from tests.builders.indicators import clear_domain_tables
from tests.conftest import SECRETS_SEEN, RegisteredClient, owner_sessions_for

DEMO: Final = DemoOptions(children=600, seed=5, start=date(2023, 1, 1), end=date(2024, 12, 31))
WINDOW: Final = {"from": "2024-01-01", "to": "2024-12-31", "period": "month"}
"""The feed's custom options (and the JSON API's parameters) every comparison uses: 12 months."""


async def load_partnership(database_url: str) -> None:
    """Empty the domain tables and load the synthetic partnership, as the owner of the tables
    (the runtime role may neither truncate them nor rebuild their indexes)."""
    factory, engine = owner_sessions_for(database_url)
    try:
        await clear_domain_tables(factory)
        async with transaction(factory) as session:
            await load_demo_data(session, DEMO)
    finally:
        await engine.dispose()


async def issue_feed_key(app: FastAPI, client: RegisteredClient, name: str = "test") -> str:
    """A new feed key of the client, as its holder would paste it."""
    async with transaction(app.state.session_factory) as session:
        issued = await create_feed_key(session, client.client_id, name)
    SECRETS_SEEN.add(issued.key)
    return issued.key


def basic(client_id: str, key: str) -> dict[str, str]:
    """HTTP Basic with the client id and a feed key, as Excel and gateways send it."""
    token = base64.b64encode(f"{client_id}:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


Row = tuple[Any, ...]


def row_of(point: dict[str, Any]) -> Row:
    """A feed row (OData property names) as a comparable tuple."""
    value = point["Value"]
    return (
        point["IndicatorId"],
        point["Breakdown"],
        point["Label"],
        point["Group"],
        point["Numerator"],
        point["Denominator"],
        None if value is None else float(value),
        point["Suppressed"],
    )


async def json_rows(
    client: httpx.AsyncClient, headers: dict[str, str], window: dict[str, str] = WINDOW
) -> list[Row]:
    """Every series the feed holds for `window`, as the JSON API gives it, in the feed's order
    (catalogue order; each indicator's total, then its breakdowns)."""
    rows: list[Row] = []
    for meta in load_catalogue().values():
        if window["period"] not in meta.periods:
            continue
        for breakdown in (None, *meta.breakdowns):
            params = dict(window) | ({"breakdown": breakdown} if breakdown else {})
            response = await client.get(f"/v1/indicators/{meta.id}", params=params, headers=headers)
            assert response.status_code == 200, response.text
            for point in response.json()["series"]:
                value = point["value"]
                rows.append(
                    (
                        meta.id,
                        breakdown,
                        point["label"],
                        point["group"],
                        point["numerator"],
                        point["denominator"],
                        None if value is None else float(value),
                        point["suppressed"],
                    )
                )
    return rows


def same_rows(left: list[Row], right: list[Row]) -> bool:
    return Counter(left) == Counter(right)
