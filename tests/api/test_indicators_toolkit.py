"""Toolkit indicators against hand-computed answers: assessments completed by agency, re-referral
within 12 months of an assessment showing neglect, and improvement on re-assessment.
Assessments and referrals are inserted directly (tests/builders/indicators.py)."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from service.db import SessionFactory
from tests.builders.indicators import (
    READ_UNSUPPRESSED,
    KnownChild,
    clear_domain_tables,
    fetch_series,
    figures,
    insert_assessment,
    insert_child,
    insert_referral,
    uk_time,
)
from tests.conftest import ClientMaker


@pytest.fixture(autouse=True)
async def _empty_domain_tables(session_factory: SessionFactory) -> None:
    await clear_domain_tables(session_factory)


async def children(factory: SessionFactory, count: int) -> list[KnownChild]:
    return [await insert_child(factory) for _ in range(count)]


# --- toolkit_assessments -------------------------------------------------------------------------


async def test_toolkit_assessments_by_agency_type_show_zeros_for_agencies_seen_in_the_range(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    [child] = await children(session_factory, 1)
    await insert_assessment(session_factory, child.id, date(2023, 3, 31), agency_type="school")
    await insert_assessment(session_factory, child.id, date(2023, 4, 1), agency_type="school")
    await insert_assessment(session_factory, child.id, date(2023, 6, 30), agency_type="school")
    await insert_assessment(session_factory, child.id, date(2023, 5, 5), agency_type="health")
    await insert_assessment(session_factory, child.id, date(2023, 7, 1), agency_type="police")
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "toolkit_assessments",
        from_="2023-04-01",
        to="2023-09-30",
        period="quarter",
        breakdown="agency_type",
    )

    assert [(p["label"], p["group"], figures(p)) for p in series] == [
        ("2023-Q2", "health", (1, None, 1)),
        ("2023-Q2", "police", (0, None, 0)),
        ("2023-Q2", "school", (2, None, 2)),
        ("2023-Q3", "health", (0, None, 0)),
        ("2023-Q3", "police", (1, None, 1)),
        ("2023-Q3", "school", (0, None, 0)),
    ]


async def test_toolkit_assessments_by_financial_year(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    [child] = await children(session_factory, 1)
    for completed_on in (date(2023, 3, 31), date(2023, 4, 1), date(2024, 3, 31), date(2024, 4, 1)):
        await insert_assessment(session_factory, child.id, completed_on)
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "toolkit_assessments",
        from_="2022-04-01",
        to="2025-03-31",
        period="financial_year",
    )

    assert [(p["label"], p["value"]) for p in series] == [
        ("2022-23", 1),
        ("2023-24", 2),
        ("2024-25", 1),
    ]


# --- rereferral_after_toolkit_share --------------------------------------------------------------


async def test_rereferral_within_12_months_of_a_toolkit_assessment_showing_neglect(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    a, b, c, d, e, f = await children(session_factory, 6)
    factory = session_factory
    # A: referred again on the same date a year later: within 12 months.
    await insert_assessment(factory, a.id, date(2023, 3, 10), highest_area_grade=4)
    await insert_referral(factory, a.id, uk_time(date(2024, 3, 10)))
    # B: a year and a day later: not.
    await insert_assessment(factory, b.id, date(2023, 3, 10), highest_area_grade=3)
    await insert_referral(factory, b.id, uk_time(date(2024, 3, 11)))
    # C: referred on the assessment day itself, which is not after it.
    await insert_assessment(factory, c.id, date(2023, 3, 10), highest_area_grade=3)
    await insert_referral(factory, c.id, uk_time(date(2023, 3, 10)))
    # D: no area at concern, so neglect did not feature: not counted at all.
    await insert_assessment(factory, d.id, date(2023, 2, 1), highest_area_grade=2)
    await insert_referral(factory, d.id, uk_time(date(2023, 5, 1)))
    # E: counted from the first such assessment in the period (5 Jan), not the second.
    await insert_assessment(factory, e.id, date(2023, 1, 5), highest_area_grade=3)
    await insert_assessment(factory, e.id, date(2023, 3, 20), highest_area_grade=3)
    await insert_referral(factory, e.id, uk_time(date(2024, 1, 10)))
    # F: only a withdrawn referral followed.
    await insert_assessment(factory, f.id, date(2023, 3, 15), highest_area_grade=5)
    await insert_referral(factory, f.id, uk_time(date(2023, 6, 1)), withdrawn=True)
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "rereferral_after_toolkit_share",
        from_="2023-01-01",
        to="2023-06-30",
        period="quarter",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2023-Q1", (1, 5, 20.0)),
        ("2023-Q2", (0, 0, None)),
    ]


# --- toolkit_improvement_share -------------------------------------------------------------------


async def test_improvement_on_reassessment_compares_with_the_assessment_before(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    a, b, c, d, e, f = await children(session_factory, 6)
    factory = session_factory
    # A: 4 then 3: improved (the assessment before is the latest earlier one).
    await insert_assessment(factory, a.id, date(2023, 1, 10), highest_area_grade=4)
    await insert_assessment(factory, a.id, date(2023, 4, 10), highest_area_grade=3)
    # B: 3 then 3: not improved.
    await insert_assessment(factory, b.id, date(2023, 1, 10), highest_area_grade=3)
    await insert_assessment(factory, b.id, date(2023, 4, 15), highest_area_grade=3)
    # C: 2, 4, then 3 naming the first as its previous: worse than 2, so not improved.
    first_of_c = await insert_assessment(factory, c.id, date(2023, 1, 10), highest_area_grade=2)
    await insert_assessment(factory, c.id, date(2023, 2, 10), highest_area_grade=4)
    await insert_assessment(
        factory, c.id, date(2023, 5, 10), highest_area_grade=3, previous_assessment_id=first_of_c
    )
    # D: 5, 3, then 4: the last re-assessment in the quarter is worse than the one before it.
    await insert_assessment(factory, d.id, date(2023, 1, 10), highest_area_grade=5)
    await insert_assessment(factory, d.id, date(2023, 4, 5), highest_area_grade=3)
    await insert_assessment(factory, d.id, date(2023, 6, 20), highest_area_grade=4)
    # E: a first assessment only. F: the earlier one used another toolkit.
    await insert_assessment(factory, e.id, date(2023, 4, 1), highest_area_grade=4)
    await insert_assessment(
        factory, f.id, date(2023, 1, 10), highest_area_grade=5, toolkit_id="another-toolkit"
    )
    await insert_assessment(factory, f.id, date(2023, 4, 10), highest_area_grade=2)
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "toolkit_improvement_share",
        from_="2023-01-01",
        to="2023-06-30",
        period="quarter",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2023-Q1", (0, 1, 0.0)),  # C's 4 after 2
        ("2023-Q2", (1, 4, 25.0)),  # A improved; B, C and D did not
    ]
