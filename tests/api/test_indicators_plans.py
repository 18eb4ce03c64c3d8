"""Child protection indicators against hand-computed answers: plans open at period end, plan
starts, ICPCs, repeat plans, domestic abuse focus, open CP and CIN plans, and ICPC timeliness in
working days. Every record is sent through POST /v1/case-events."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
import pytest

from service.db import SessionFactory
from tests.builders.case_events import (
    cin_plan_ended,
    cin_plan_started,
    cp_plan_category_changed,
    cp_plan_ended,
    cp_plan_started,
    icpc_held,
    section47_started,
)
from tests.builders.indicators import (
    fetch_series,
    figures,
    insert_child,
    insert_children,
    send_as_case_system,
)
from tests.conftest import ClientMaker

# Indicators count whole tables: each test starts from empty domain tables.
pytestmark = pytest.mark.usefixtures("empty_domain_tables")


async def cp_plans_in_early_2024(
    factory: SessionFactory,
) -> list[dict[str, Any]]:
    """A: NEG 10 Jan to 31 Mar. B: PHY from 5 Jan, NEG from 29 Feb. C: NEG from 1 Feb, EMO from
    15 Mar. D: MUL from 1 Dec 2023. E: a CIN plan for neglect, which is not a CP plan."""
    a, b, c, d, e = await insert_children(factory, 5)
    return [
        cp_plan_started(a.ref, date(2024, 1, 10), "A"),
        cp_plan_ended(a.ref, date(2024, 3, 31), "A"),
        cp_plan_started(b.ref, date(2024, 1, 5), "B", initial_category="PHY"),
        cp_plan_category_changed(b.ref, date(2024, 2, 29), "B", "NEG"),
        cp_plan_started(c.ref, date(2024, 2, 1), "C"),
        cp_plan_category_changed(c.ref, date(2024, 3, 15), "C", "EMO"),
        cp_plan_started(d.ref, date(2023, 12, 1), "D", initial_category="MUL"),
        cin_plan_started(e.ref, date(2024, 1, 1), "E", neglect=True),
    ]


# --- cp_plan_neglect_share -----------------------------------------------------------------------


async def test_cp_neglect_share_on_each_month_end_uses_the_category_on_that_day(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    reader = await send_as_case_system(
        client, make_client, await cp_plans_in_early_2024(session_factory)
    )

    series = await fetch_series(
        client,
        reader.headers,
        "cp_plan_neglect_share",
        from_="2024-01-01",
        to="2024-03-31",
        period="snapshot",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2024-01-31", (1, 3, 33.3)),  # A NEG, B PHY, D MUL
        ("2024-02-29", (3, 4, 75.0)),  # B became NEG that day; C started NEG
        ("2024-03-31", (1, 3, 33.3)),  # A ended that day; C is EMO now
    ]


async def test_cp_neglect_share_for_a_financial_year_is_taken_on_31_march(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    reader = await send_as_case_system(
        client, make_client, await cp_plans_in_early_2024(session_factory)
    )

    series = await fetch_series(
        client,
        reader.headers,
        "cp_plan_neglect_share",
        from_="2023-04-01",
        to="2024-04-01",
        period="financial_year",
    )

    assert [(p["label"], p["period_end"], figures(p)) for p in series] == [
        ("2023-24", "2024-03-31", (1, 3, 33.3)),  # B NEG; C EMO; D MUL; A ended that day
        ("2024-25", "2025-03-31", (1, 3, 33.3)),  # still open: B NEG, C EMO, D MUL
    ]


# --- cp_plan_starts_neglect_share ----------------------------------------------------------------


async def test_cp_plan_starts_under_neglect_use_the_initial_category(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    reader = await send_as_case_system(
        client, make_client, await cp_plans_in_early_2024(session_factory)
    )

    series = await fetch_series(
        client,
        reader.headers,
        "cp_plan_starts_neglect_share",
        from_="2023-10-01",
        to="2024-06-30",
        period="quarter",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2023-Q4", (0, 1, 0.0)),  # D (MUL)
        ("2024-Q1", (2, 3, 66.7)),  # A and C NEG (C's later change does not count), B PHY
        ("2024-Q2", (0, 0, None)),
    ]


# --- icpc_neglect_children -----------------------------------------------------------------------


async def test_children_at_an_icpc_for_neglect_count_once_per_period(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    a, b, c, d = await insert_children(session_factory, 4)
    reader = await send_as_case_system(
        client,
        make_client,
        [
            icpc_held(a.ref, date(2024, 1, 20), "A-1", categories=["NEG", "EMO"]),
            icpc_held(a.ref, date(2024, 2, 20), "A-2", categories=["NEG"], outcome="no_plan"),
            icpc_held(b.ref, date(2024, 3, 31), "B-1", categories=["PHY"]),
            icpc_held(c.ref, date(2024, 3, 31), "C-1", categories=["NEG"], outcome="no_plan"),
            icpc_held(d.ref, date(2024, 4, 1), "D-1", categories=["NEG"]),
        ],
    )

    by_quarter = await fetch_series(
        client,
        reader.headers,
        "icpc_neglect_children",
        from_="2024-01-01",
        to="2024-06-30",
        period="quarter",
    )
    by_month = await fetch_series(
        client, reader.headers, "icpc_neglect_children", from_="2024-01-01", to="2024-04-30"
    )

    assert [(p["label"], figures(p)) for p in by_quarter] == [
        ("2024-Q1", (2, None, 2)),
        ("2024-Q2", (1, None, 1)),
    ]
    assert [p["value"] for p in by_month] == [1, 1, 1, 1]


# --- repeat_cp_plan_neglect ----------------------------------------------------------------------


async def repeat_plans(factory: SessionFactory) -> list[dict[str, Any]]:
    """A: PHY in 2022, NEG from 1 Feb 2024 (a repeat). B: NEG from 1 Mar 2024 (a first plan).
    C: NEG 10 Jan to 10 Feb 2024 (first), NEG again from 10 Mar 2024 (repeat). D: EMO only."""
    a, b, c, d = await insert_children(factory, 4)
    return [
        cp_plan_started(a.ref, date(2022, 1, 1), "A-1", initial_category="PHY"),
        cp_plan_ended(a.ref, date(2022, 6, 1), "A-1"),
        cp_plan_started(a.ref, date(2024, 2, 1), "A-2"),
        cp_plan_started(b.ref, date(2024, 3, 1), "B-1"),
        cp_plan_started(c.ref, date(2024, 1, 10), "C-1"),
        cp_plan_ended(c.ref, date(2024, 2, 10), "C-1"),
        cp_plan_started(c.ref, date(2024, 3, 10), "C-2"),
        cp_plan_started(d.ref, date(2024, 1, 5), "D-1", initial_category="EMO"),
    ]


async def test_repeat_neglect_plans_by_quarter_count_each_child_once(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    reader = await send_as_case_system(client, make_client, await repeat_plans(session_factory))

    series = await fetch_series(
        client,
        reader.headers,
        "repeat_cp_plan_neglect",
        from_="2024-01-01",
        to="2024-03-31",
        period="quarter",
    )

    assert [(p["label"], figures(p)) for p in series] == [("2024-Q1", (2, 3, 66.7))]


async def test_repeat_neglect_plans_by_month(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    reader = await send_as_case_system(client, make_client, await repeat_plans(session_factory))

    series = await fetch_series(
        client, reader.headers, "repeat_cp_plan_neglect", from_="2024-01-01", to="2024-03-31"
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2024-01", (0, 1, 0.0)),
        ("2024-02", (1, 1, 100.0)),
        ("2024-03", (1, 2, 50.0)),
    ]


# --- cp_plan_neglect_domestic_abuse_share --------------------------------------------------------


async def test_neglect_plans_focused_on_domestic_abuse(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    a, b, c, d = await insert_children(session_factory, 4)
    reader = await send_as_case_system(
        client,
        make_client,
        [
            cp_plan_started(a.ref, date(2024, 1, 2), "A", domestic_abuse_focus=True),
            cp_plan_started(b.ref, date(2024, 2, 2), "B", domestic_abuse_focus=False),
            cp_plan_started(c.ref, date(2024, 3, 31), "C", domestic_abuse_focus=True),
            cp_plan_started(
                d.ref, date(2024, 3, 2), "D", initial_category="PHY", domestic_abuse_focus=True
            ),
        ],
    )

    series = await fetch_series(
        client,
        reader.headers,
        "cp_plan_neglect_domestic_abuse_share",
        from_="2024-01-01",
        to="2024-06-30",
        period="quarter",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2024-Q1", (2, 3, 66.7)),
        ("2024-Q2", (0, 0, None)),
    ]


# --- neglect_plans_open --------------------------------------------------------------------------


async def open_plans(factory: SessionFactory) -> list[dict[str, Any]]:
    """A: CP NEG and CIN neglect from 10 Jan. B: CP PHY from 5 Jan, NEG from 15 Feb. C: CIN not
    for neglect. D: CIN neglect from 20 Jan, ended 29 Feb (so not open on 29 Feb)."""
    a, b, c, d = await insert_children(factory, 4)
    return [
        cp_plan_started(a.ref, date(2024, 1, 10), "A-CP"),
        cin_plan_started(a.ref, date(2024, 1, 10), "A-CIN"),
        cp_plan_started(b.ref, date(2024, 1, 5), "B", initial_category="PHY"),
        cp_plan_category_changed(b.ref, date(2024, 2, 15), "B", "NEG"),
        cin_plan_started(c.ref, date(2024, 1, 1), "C", neglect=False),
        cin_plan_started(d.ref, date(2024, 1, 20), "D"),
        cin_plan_ended(d.ref, date(2024, 2, 29), "D"),
    ]


async def test_open_neglect_plans_at_each_month_end(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    reader = await send_as_case_system(client, make_client, await open_plans(session_factory))

    series = await fetch_series(
        client,
        reader.headers,
        "neglect_plans_open",
        from_="2023-12-01",
        to="2024-02-29",
        period="snapshot",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2023-12-31", (0, None, 0)),
        ("2024-01-31", (3, None, 3)),
        ("2024-02-29", (3, None, 3)),
    ]


async def test_open_neglect_plans_by_plan_type(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    reader = await send_as_case_system(client, make_client, await open_plans(session_factory))

    series = await fetch_series(
        client,
        reader.headers,
        "neglect_plans_open",
        from_="2024-01-01",
        to="2024-02-29",
        breakdown="plan_type",
    )

    assert [(p["label"], p["group"], p["value"]) for p in series] == [
        ("2024-01", "cp", 1),
        ("2024-01", "cin", 2),
        ("2024-02", "cp", 2),
        ("2024-02", "cin", 1),
    ]


async def test_open_neglect_plans_by_age_band_on_the_period_end(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    five_on_31_march = await insert_child(session_factory, date_of_birth=date(2019, 3, 31))
    five_on_1_april = await insert_child(session_factory, date_of_birth=date(2019, 4, 1))
    reader = await send_as_case_system(
        client,
        make_client,
        [
            cp_plan_started(five_on_31_march.ref, date(2024, 1, 10), "P"),
            cp_plan_started(five_on_1_april.ref, date(2024, 1, 10), "P"),
        ],
    )

    series = await fetch_series(
        client,
        reader.headers,
        "neglect_plans_open",
        from_="2024-03-01",
        to="2024-03-31",
        period="quarter",
        breakdown="age_band",
    )

    assert [(p["group"], p["value"]) for p in series] == [
        ("under 1", 0),
        ("1-4", 1),
        ("5-9", 1),
        ("10-15", 0),
        ("16+", 0),
    ]


# --- icpc_within_15_working_days_share -----------------------------------------------------------


async def test_icpcs_within_15_working_days_skip_weekends_and_bank_holidays(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    a, b, c, d, e = await insert_children(session_factory, 5)
    reader = await send_as_case_system(
        client,
        make_client,
        [
            # Monday 18 Dec 2023: with Christmas, Boxing Day and New Year's Day off, the 15th
            # working day is Thursday 11 January (counting weekdays only, it would be 8 January).
            section47_started(a.ref, date(2023, 12, 18), "S-A"),
            icpc_held(a.ref, date(2024, 1, 11), "S-A"),
            section47_started(b.ref, date(2023, 12, 18), "S-B"),
            icpc_held(b.ref, date(2024, 1, 12), "S-B"),
            # Friday 1 March: three clear weeks, the 15th working day is Friday 22 March.
            section47_started(c.ref, date(2024, 3, 1), "S-C"),
            icpc_held(c.ref, date(2024, 3, 22), "S-C"),
            # Wednesday 20 March: Good Friday and Easter Monday are off; 11 April is the 14th.
            section47_started(d.ref, date(2024, 3, 20), "S-D"),
            icpc_held(d.ref, date(2024, 4, 11), "S-D"),
            # No Section 47 start recorded: cannot be timed, so left out.
            icpc_held(e.ref, date(2024, 2, 1), "S-E"),
        ],
    )

    series = await fetch_series(
        client,
        reader.headers,
        "icpc_within_15_working_days_share",
        from_="2024-01-01",
        to="2024-06-30",
        period="quarter",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2024-Q1", (2, 3, 66.7)),
        ("2024-Q2", (1, 1, 100.0)),
    ]
