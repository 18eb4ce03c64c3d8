"""The demo data's bulk load derives what the single-row path derives: a small partnership loaded
with COPY and set-based SQL gives the same referral columns and the same indicator figures as the
same referrals posted one by one through the API (`POST /v1/referrals`, its decision and its
withdrawal), which store them with `neglect_create_referral`.
"""

# The statements are this module's fixed text, with table names from the loader's own list.
# ruff: noqa: S608

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from service.db import SessionFactory, transaction
from service.demo.generator import LOAD_ORDER, DemoOptions, load_demo_data
from service.demo.vocabulary import AGENCIES
from service.indicators.catalogue import load_catalogue
from tests.builders.indicators import READ_UNSUPPRESSED, clear_domain_tables, fetch_series
from tests.conftest import ClientMaker, RegisteredClient

OPTIONS = DemoOptions(children=60, seed=5, start=date(2023, 1, 1), end=date(2024, 12, 31))
DEMO_CLIENTS = sorted({agency.client_id for agency in AGENCIES.values})

_DERIVED = text(
    "SELECT external_reference, rereferral, rereferral_count, agency_rereferral_count, "
    "previous_received_at, status, decision_outcome, decided_at "
    "FROM referral ORDER BY external_reference"
)
_AS_SENT = text(
    "SELECT id, agency_type, agency_name, body, status, decision, withdrawal_reason "
    "FROM referral ORDER BY received_at, id"
)


# The API refuses, even in a back-loaded referral, a child who is 18 today and an unborn child
# whose expected birth is long past: such children are taken out of the loaded partnership with
# everything recorded about them.
_ADULTS = (
    "SELECT id FROM child "
    "WHERE date_of_birth IS NULL OR date_of_birth <= current_date - interval '18 years'"
)
_REMOVE_ADULTS = [
    f"DELETE FROM care_plan_category_change WHERE care_plan_id IN "
    f"(SELECT id FROM care_plan WHERE child_id IN ({_ADULTS}))",
    *(
        f"DELETE FROM {table} WHERE child_id IN ({_ADULTS})"
        for table in reversed(LOAD_ORDER)
        if table not in ("care_plan_category_change", "child")
    ),
    f"DELETE FROM child WHERE id IN ({_ADULTS})",
]


@pytest.fixture
async def bulk_loaded(owner_session_factory: SessionFactory) -> AsyncIterator[None]:
    await clear_domain_tables(owner_session_factory)
    async with transaction(owner_session_factory) as session:
        await load_demo_data(session, OPTIONS)
        for statement in _REMOVE_ADULTS:
            await session.execute(text(statement))
    yield
    await clear_domain_tables(owner_session_factory)


async def _every_series(
    client: httpx.AsyncClient, reader: RegisteredClient
) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
    figures: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for meta in load_catalogue().values():
        for breakdown in (None, *meta.breakdowns):
            params = {"from_": "2023-01-01", "to": "2024-12-31", "period": "quarter"}
            if breakdown is not None:
                params["breakdown"] = breakdown
            figures[(meta.id, breakdown)] = await fetch_series(
                client, reader.headers, meta.id, **params
            )
    return figures


async def _post(
    client: httpx.AsyncClient, sender: RegisteredClient, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    headers = {**sender.headers, "Idempotency-Key": str(uuid.uuid4())}
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code in (200, 201), response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_bulk_loaded_referrals_give_the_figures_of_the_same_referrals_posted_one_by_one(
    bulk_loaded: None,
    client: httpx.AsyncClient,
    make_client: ClientMaker,
    owner_session_factory: SessionFactory,
) -> None:
    reader = await make_client(READ_UNSUPPRESSED)
    bulk_figures = await _every_series(client, reader)
    async with owner_session_factory() as session:
        bulk_derived = (await session.execute(_DERIVED)).all()
        sent = (await session.execute(_AS_SENT)).all()
    async with transaction(owner_session_factory) as session:
        await session.execute(
            text("DELETE FROM referral WHERE client_id = ANY(:clients)"), {"clients": DEMO_CLIENTS}
        )

    senders: dict[tuple[str, str], RegisteredClient] = {}
    front_door = await make_client(
        ["referrals:decide", "referrals:read:all"], agency_type="local_authority"
    )
    # In the order they were received, as a case system sends them; the children already exist
    # (loaded with the rest) and are matched by their identifiers.
    for row in sent:
        key = (row.agency_type, row.agency_name)
        if key not in senders:
            senders[key] = await make_client(
                ["referrals:write"], agency_name=row.agency_name, agency_type=row.agency_type
            )
        created = await _post(client, senders[key], "/v1/referrals", row.body)
        if row.decision is not None:
            decision = {
                name: row.decision[name]
                for name in ("outcome", "rationale", "decided_by", "decided_at")
            }
            await _post(client, front_door, f"/v1/referrals/{created['id']}/decision", decision)
        elif row.status == "withdrawn":
            await _post(
                client,
                senders[key],
                f"/v1/referrals/{created['id']}/withdraw",
                {"reason": row.withdrawal_reason},
            )
    async with owner_session_factory() as session:
        posted_derived = (await session.execute(_DERIVED)).all()
    posted_figures = await _every_series(client, reader)

    assert len(posted_derived) == len(bulk_derived) > 50
    assert posted_derived == bulk_derived
    assert any(row.rereferral_count > 0 for row in bulk_derived)
    assert any(row.previous_received_at is not None for row in bulk_derived)
    assert posted_figures == bulk_figures
