"""Toolkit indicators against hand-computed answers: assessments completed by agency, re-referral
within 12 months of an assessment showing neglect, and improvement and mean grade change on
re-assessment.
Assessments and referrals are sent through the public API (tests/builders/indicators.py)."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from service.db import SessionFactory
from tests.builders.disclosure import key_sum, published_mean
from tests.builders.indicators import (
    READ_UNSUPPRESSED,
    KnownChild,
    fetch_series,
    figures,
    indicator_api,
    new_child,
    uk_time,
)
from tests.conftest import ClientMaker

# Indicators count whole tables: each test starts from empty domain tables.
pytestmark = pytest.mark.usefixtures("empty_domain_tables")


def children(count: int) -> list[KnownChild]:
    return [new_child() for _ in range(count)]


# --- toolkit_assessments -------------------------------------------------------------------------


async def test_toolkit_assessments_by_agency_type_show_zeros_for_agencies_seen_in_the_range(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    [child] = children(1)
    await api.assess(child, date(2023, 3, 31), agency_type="school")
    await api.assess(child, date(2023, 4, 1), agency_type="school")
    await api.assess(child, date(2023, 6, 30), agency_type="school")
    await api.assess(child, date(2023, 5, 5), agency_type="health")
    await api.assess(child, date(2023, 7, 1), agency_type="police")
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
    api = await indicator_api(client, make_client, session_factory)
    [child] = children(1)
    for completed_on in (date(2023, 3, 31), date(2023, 4, 1), date(2024, 3, 31), date(2024, 4, 1)):
        await api.assess(child, completed_on)
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
    api = await indicator_api(client, make_client, session_factory)
    a, b, c, d, e, f = children(6)
    # A: referred again on the same date a year later: within 12 months.
    await api.assess(a, date(2023, 3, 10), highest_area_grade=4)
    await api.refer(a, uk_time(date(2024, 3, 10)))
    # B: a year and a day later: not.
    await api.assess(b, date(2023, 3, 10), highest_area_grade=3)
    await api.refer(b, uk_time(date(2024, 3, 11)))
    # C: referred on the assessment day itself, which is not after it.
    await api.assess(c, date(2023, 3, 10), highest_area_grade=3)
    await api.refer(c, uk_time(date(2023, 3, 10)))
    # D: no area at concern, so neglect did not feature: not counted at all.
    await api.assess(d, date(2023, 2, 1), highest_area_grade=2)
    await api.refer(d, uk_time(date(2023, 5, 1)))
    # E: counted from the first such assessment in the period (5 Jan), not the second.
    await api.assess(e, date(2023, 1, 5), highest_area_grade=3)
    await api.assess(e, date(2023, 3, 20), highest_area_grade=3)
    await api.refer(e, uk_time(date(2024, 1, 10)))
    # F: only a withdrawn referral followed.
    await api.assess(f, date(2023, 3, 15), highest_area_grade=5)
    await api.refer(f, uk_time(date(2023, 6, 1)), withdrawn=True)
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
    api = await indicator_api(client, make_client, session_factory)
    a, b, c, d, e, f = children(6)
    # A: 4 then 3: improved (the assessment before is the latest earlier one).
    await api.assess(a, date(2023, 1, 10), highest_area_grade=4)
    await api.assess(a, date(2023, 4, 10), highest_area_grade=3)
    # B: 3 then 3: not improved.
    await api.assess(b, date(2023, 1, 10), highest_area_grade=3)
    await api.assess(b, date(2023, 4, 15), highest_area_grade=3)
    # C: 2, 4, then 3 naming the first as its previous: worse than 2, so not improved.
    first_of_c = await api.assess(c, date(2023, 1, 10), highest_area_grade=2)
    await api.assess(c, date(2023, 2, 10), highest_area_grade=4)
    await api.assess(c, date(2023, 5, 10), highest_area_grade=3, previous_assessment_id=first_of_c)
    # D: 5, 3, then 4: the last re-assessment in the quarter is worse than the one before it.
    await api.assess(d, date(2023, 1, 10), highest_area_grade=5)
    await api.assess(d, date(2023, 4, 5), highest_area_grade=3)
    await api.assess(d, date(2023, 6, 20), highest_area_grade=4)
    # E: a first assessment only. F: the earlier one used another toolkit.
    await api.assess(e, date(2023, 4, 1), highest_area_grade=4)
    await api.assess(
        f, date(2023, 1, 10), highest_area_grade=5, toolkit=await api.publish_other_toolkit()
    )
    await api.assess(f, date(2023, 4, 10), highest_area_grade=2)
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


# --- toolkit_mean_grade_change -------------------------------------------------------------------


async def test_mean_grade_change_is_the_mean_fall_in_the_highest_area_grade(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    a, b, c = children(3)
    await api.assess(a, date(2023, 1, 10), highest_area_grade=4)
    await api.assess(a, date(2023, 4, 10), highest_area_grade=2)  # +2
    await api.assess(b, date(2023, 1, 10), highest_area_grade=3)
    await api.assess(b, date(2023, 4, 15), highest_area_grade=3)  # 0
    await api.assess(c, date(2023, 1, 10), highest_area_grade=2)
    await api.assess(c, date(2023, 5, 10), highest_area_grade=3)  # -1
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "toolkit_mean_grade_change",
        from_="2023-01-01",
        to="2023-06-30",
        period="quarter",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2023-Q1", (0, 0, None)),  # first assessments only: nothing re-assessed
        ("2023-Q2", (1, 3, 0.33)),
    ]


async def test_mean_grade_change_of_few_children_is_suppressed_but_a_small_sum_is_not(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    # Q1: six children re-assessed, one improving by 1: a sum of 1 over 6 children is shown.
    for position, child in enumerate(children(6)):
        await api.assess(child, date(2022, 12, 1), highest_area_grade=3)
        await api.assess(child, date(2023, 2, 1), highest_area_grade=2 if position == 0 else 3)
    # Q2: three children re-assessed: hidden.
    for child in children(3):
        await api.assess(child, date(2023, 1, 5), highest_area_grade=4)
        await api.assess(child, date(2023, 5, 1), highest_area_grade=2)
    reader = await make_client(["indicators:read"])

    series = await fetch_series(
        client,
        reader.headers,
        "toolkit_mean_grade_change",
        from_="2023-01-01",
        to="2023-06-30",
        period="quarter",
    )

    # Q1's six children and their sum of 1 are shown, perturbed; each child counts with its key.
    q1_children = await key_sum(
        session_factory,
        "SELECT c.record_key FROM child c WHERE c.id IN (SELECT child_id FROM assessment "
        "WHERE completed_on = '2023-02-01')",
    )
    assert [(p["label"], p["suppressed"], figures(p)) for p in series] == [
        ("2023-Q1", False, published_mean(1, 6, q1_children)),
        ("2023-Q2", True, (None, None, None)),
    ]
