"""Early help, health and feedback indicators against hand-computed answers. Every record is sent
through POST /v1/case-events."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from service.db import SessionFactory
from tests.builders.case_events import (
    early_help_assessment_completed,
    feedback_received,
    health_appointment,
    stepped_up_to_social_care,
)
from tests.builders.disclosure import key_sum, published_mean
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


# --- early_help_neglect_identified ---------------------------------------------------------------


async def test_early_help_assessments_that_identified_neglect(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    a, b, c, d, e = await insert_children(session_factory, 5)
    reader = await send_as_case_system(
        client,
        make_client,
        [
            early_help_assessment_completed(a.ref, date(2024, 1, 1), "A"),
            early_help_assessment_completed(b.ref, date(2024, 2, 1), "B", neglect_identified=False),
            early_help_assessment_completed(
                c.ref, date(2024, 3, 1), "C", neglect_considered=False, neglect_identified=False
            ),
            early_help_assessment_completed(d.ref, date(2024, 3, 31), "D"),
            early_help_assessment_completed(e.ref, date(2024, 4, 1), "E"),
        ],
    )

    series = await fetch_series(
        client,
        reader.headers,
        "early_help_neglect_identified",
        from_="2024-01-01",
        to="2024-06-30",
        period="quarter",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2024-Q1", (2, 4, 50.0)),
        ("2024-Q2", (1, 1, 100.0)),
    ]


# --- early_help_neglect_stepped_up_share ---------------------------------------------------------


async def test_early_help_for_neglect_stepped_up_within_12_months(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    a, b, c, d, e = await insert_children(session_factory, 5)
    reader = await send_as_case_system(
        client,
        make_client,
        [
            # A: stepped up on the same date a year later: within 12 months.
            early_help_assessment_completed(a.ref, date(2023, 1, 10), "A"),
            stepped_up_to_social_care(a.ref, date(2024, 1, 10)),
            # B: a year and a day later: not.
            early_help_assessment_completed(b.ref, date(2023, 1, 10), "B"),
            stepped_up_to_social_care(b.ref, date(2024, 1, 11)),
            # C: stepped up on the assessment day itself: counted.
            early_help_assessment_completed(c.ref, date(2023, 2, 10), "C"),
            stepped_up_to_social_care(c.ref, date(2023, 2, 10)),
            # D: neglect not identified, so not in the denominator.
            early_help_assessment_completed(
                d.ref, date(2023, 2, 15), "D", neglect_identified=False
            ),
            stepped_up_to_social_care(d.ref, date(2023, 3, 1)),
            # E: the only step-up came before the assessment.
            stepped_up_to_social_care(e.ref, date(2023, 2, 1)),
            early_help_assessment_completed(e.ref, date(2023, 3, 1), "E"),
        ],
    )

    series = await fetch_series(
        client,
        reader.headers,
        "early_help_neglect_stepped_up_share",
        from_="2022-04-01",
        to="2024-03-31",
        period="financial_year",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2022-23", (2, 4, 50.0)),
        ("2023-24", (0, 0, None)),
    ]


# --- health_appointment_attendance ---------------------------------------------------------------


async def test_health_appointment_attendance_by_age_band_follows_adolescents(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    sixteen_on_15_feb = await insert_child(session_factory, date_of_birth=date(2008, 2, 15))
    four_year_old = await insert_child(session_factory, date_of_birth=date(2020, 1, 1))
    reader = await send_as_case_system(
        client,
        make_client,
        [
            health_appointment(sixteen_on_15_feb.ref, date(2024, 2, 14), attended=False),
            health_appointment(
                sixteen_on_15_feb.ref, date(2024, 2, 15), attended=True, kind="medical"
            ),
            health_appointment(four_year_old.ref, date(2024, 1, 10), attended=True),
            health_appointment(four_year_old.ref, date(2024, 3, 10), attended=False),
        ],
    )

    total = await fetch_series(
        client,
        reader.headers,
        "health_appointment_attendance",
        from_="2024-01-01",
        to="2024-03-31",
        period="quarter",
    )
    by_age = await fetch_series(
        client,
        reader.headers,
        "health_appointment_attendance",
        from_="2024-01-01",
        to="2024-03-31",
        period="quarter",
        breakdown="age_band",
    )

    assert [figures(p) for p in total] == [(2, 4, 50.0)]
    assert [(p["group"], figures(p)) for p in by_age] == [
        ("under 1", (0, 0, None)),
        ("1-4", (1, 2, 50.0)),
        ("5-9", (0, 0, None)),
        ("10-15", (0, 1, 0.0)),
        ("16+", (1, 1, 100.0)),
    ]


# --- family_feedback -----------------------------------------------------------------------------


async def test_feedback_is_the_mean_rating_to_two_decimal_places(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    parent, young_person = await insert_children(session_factory, 2)
    reader = await send_as_case_system(
        client,
        make_client,
        [
            feedback_received(parent.ref, date(2024, 1, 5), 5),
            feedback_received(parent.ref, date(2024, 2, 5), 4),
            feedback_received(young_person.ref, date(2024, 3, 5), 2, from_whom="child"),
            feedback_received(parent.ref, date(2024, 3, 31), 3),
            feedback_received(parent.ref, date(2024, 4, 1), 5),
            feedback_received(young_person.ref, date(2024, 5, 1), 4, from_whom="child"),
            feedback_received(parent.ref, date(2024, 6, 30), 4),
        ],
    )

    series = await fetch_series(
        client,
        reader.headers,
        "family_feedback",
        from_="2024-01-01",
        to="2024-06-30",
        period="quarter",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2024-Q1", (14, 4, 3.5)),
        ("2024-Q2", (13, 3, 4.33)),
    ]


async def test_feedback_from_few_families_is_suppressed_without_the_unsuppressed_scope(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    [parent] = await insert_children(session_factory, 1)
    await send_as_case_system(
        client,
        make_client,
        [feedback_received(parent.ref, date(2024, 1, day), 5) for day in range(1, 9)]
        + [feedback_received(parent.ref, date(2024, 4, 1), 1)],
    )
    reader = await make_client(["indicators:read"])

    series = await fetch_series(
        client,
        reader.headers,
        "family_feedback",
        from_="2024-01-01",
        to="2024-06-30",
        period="quarter",
    )

    # Eight pieces of feedback are shown, perturbed (a rating sum of 40); one is hidden.
    keys = await key_sum(
        session_factory,
        "SELECT record_key FROM case_event WHERE event_type = 'feedback_received' "
        "AND occurred_on < '2024-04-01'",
    )
    assert [(p["label"], p["suppressed"], figures(p)) for p in series] == [
        ("2024-Q1", False, published_mean(40, 8, keys)),
        ("2024-Q2", True, (None, None, None)),
    ]
