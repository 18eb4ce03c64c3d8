"""Breakdowns: every indicator answers exactly the breakdowns the catalogue lists for it (and 422
for any other), the child's disability as recorded on referrals, and who gave feedback."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
from fastapi import FastAPI

from schemas.indicators import BREAKDOWNS, Breakdown
from service.db import SessionFactory
from service.indicators.catalogue import load_catalogue
from service.indicators.sql import FIXED_GROUPS
from tests.builders.case_events import feedback_received
from tests.builders.indicators import (
    READ_UNSUPPRESSED,
    IndicatorApi,
    fetch_series,
    figures,
    indicator_api,
    insert_children,
    new_child,
    send_as_case_system,
    uk_time,
)
from tests.conftest import ClientMaker, RegisteredClient

EVERY_PAIR: list[tuple[str, Breakdown]] = [
    (meta.id, breakdown) for meta in load_catalogue().values() for breakdown in BREAKDOWNS
]


@pytest.fixture(scope="module")
async def reader(app: FastAPI) -> RegisteredClient:
    # One client for the whole module: registering one (a scrypt hash) costs more than a query.
    return await ClientMaker(app)(["indicators:read"])


@pytest.mark.parametrize(("indicator_id", "breakdown"), EVERY_PAIR)
async def test_each_indicator_answers_the_breakdowns_it_lists_and_refuses_the_others(
    client: httpx.AsyncClient, reader: RegisteredClient, indicator_id: str, breakdown: Breakdown
) -> None:
    offered = load_catalogue()[indicator_id].breakdowns

    response = await client.get(
        f"/v1/indicators/{indicator_id}",
        params={"from": "1990-01-01", "to": "1990-12-31", "period": "year", "breakdown": breakdown},
        headers=reader.headers,
    )

    if breakdown in offered:
        assert response.status_code == 200, response.text
        # Nothing is recorded in 1990: one year, each group shown in every period, all zero.
        series = response.json()["series"]
        assert [point["group"] for point in series] == list(FIXED_GROUPS[breakdown])
        assert all(point["numerator"] == 0 for point in series)
    else:
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["field"] == "query.breakdown"
        assert error["message"] == f"this indicator offers the breakdowns {', '.join(offered)}"


# --- disability --------------------------------------------------------------------------------


async def assess_in_june(
    api: IndicatorApi, *children_and_referrals: tuple[list[list[str]], bool]
) -> None:
    """For each entry (the disabilities each referral records, oldest first; whether to refer at
    all), a new child referred so, then assessed on 15 June 2023."""
    for referrals, refer in children_and_referrals:
        child = new_child()
        if refer:
            for month, disabilities in enumerate(referrals, start=1):
                await api.refer(child, uk_time(date(2023, month, 10)), disabilities=disabilities)
        await api.assess(child, date(2023, 6, 15))


@pytest.mark.usefixtures("empty_domain_tables")
async def test_disability_is_as_the_latest_referral_recording_any_gives_it(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    await assess_in_june(
        api,
        ([["NONE"]], True),  # none
        ([["AUT"]], True),  # any, AUT
        ([["AUT", "LD"]], True),  # any, AUT and LD
        ([[]], True),  # nothing recorded: not known
        ([], False),  # never referred: not known
        ([["NONE"], ["MOB"]], True),  # the later referral wins: any, MOB
        ([["LD"], []], True),  # a later referral recording nothing changes nothing: any, LD
    )
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "toolkit_assessments",
        from_="2023-01-01",
        to="2023-12-31",
        period="year",
        breakdown="disability",
    )

    assert [(point["group"], figures(point)[0]) for point in series] == [
        ("none", 1),
        ("any", 4),
        ("not known", 2),
        ("AUT", 2),
        ("LD", 2),
        ("MOB", 1),
    ]


@pytest.mark.usefixtures("empty_domain_tables")
async def test_a_lone_small_disability_code_is_protected_against_the_any_cell(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    await assess_in_june(
        api,
        *[([["NONE"]], True)] * 6,
        *[([["AUT"]], True)] * 7,
        *[([["LD"]], True)] * 3,
    )
    reader = await make_client(["indicators:read"])

    series = await fetch_series(
        client,
        reader.headers,
        "toolkit_assessments",
        from_="2023-01-01",
        to="2023-12-31",
        period="year",
        breakdown="disability",
    )

    # LD (3) is hidden; were AUT shown, LD would be "any" minus AUT, so AUT is hidden too, rather
    # than "none", which is no part of "any".
    assert [(point["group"], point["suppressed"]) for point in series] == [
        ("none", False),
        ("any", False),
        ("not known", False),
        ("AUT", True),
        ("LD", True),
    ]


# --- feedback_from -------------------------------------------------------------------------------


@pytest.mark.usefixtures("empty_domain_tables")
async def test_feedback_from_children_and_from_parents_or_carers_apart(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    parent, young_person = await insert_children(session_factory, 2)
    reader = await send_as_case_system(
        client,
        make_client,
        [
            feedback_received(parent.ref, date(2024, 1, 5), 4),
            feedback_received(parent.ref, date(2024, 2, 5), 5),
            feedback_received(parent.ref, date(2024, 3, 5), 3),
            feedback_received(young_person.ref, date(2024, 1, 9), 2, from_whom="child"),
            feedback_received(young_person.ref, date(2024, 3, 9), 4, from_whom="child"),
        ],
    )

    series = await fetch_series(
        client,
        reader.headers,
        "family_feedback",
        from_="2024-01-01",
        to="2024-03-31",
        period="quarter",
        breakdown="feedback_from",
    )

    assert [(point["group"], figures(point)) for point in series] == [
        ("child", (6, 2, 3.0)),
        ("parent_carer", (12, 3, 4.0)),
    ]
