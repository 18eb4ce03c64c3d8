"""Referral indicators against hand-computed answers: neglect share, re-referrals (DfE C1) and
decisions within 24 hours. Referrals, decisions and withdrawals are sent through the referral API
(tests/builders/indicators.py). The strategies' 35.2% is in test_indicators_published_figures.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import httpx
import pytest

from service.db import SessionFactory
from tests.builders.indicators import (
    READ_UNSUPPRESSED,
    IndicatorApi,
    fetch_series,
    figures,
    indicator_api,
    insert_child,
    new_child,
    point_for,
    uk_time,
)
from tests.conftest import ClientMaker

# Indicators count whole tables: each test starts from empty domain tables.
pytestmark = pytest.mark.usefixtures("empty_domain_tables")


# --- neglect_referral_share ----------------------------------------------------------------------


async def test_neglect_share_counts_referrals_by_their_day_in_england_and_skips_withdrawn(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    child = new_child()
    q1 = [("neglect",)] * 3 + [("neglect", "physical_abuse")] + [("emotional_abuse",)] * 6
    for offset, categories in enumerate(q1):
        await api.refer(
            child,
            uk_time(date(2023, 2, 1) + timedelta(days=offset)),
            categories=categories,
        )
    await api.refer(child, uk_time(date(2023, 2, 20)), withdrawn=True)
    # 23:30 on 31 March in England (BST) is still the first quarter ...
    await api.refer(child, uk_time(date(2023, 3, 31), time(23, 30)), categories=("other",))
    # ... and 00:30 on 1 April is the second, though it is still 31 March in UTC.
    april_first = uk_time(date(2023, 4, 1), time(0, 30))
    assert april_first.astimezone(UTC).date() == date(2023, 3, 31)
    await api.refer(child, april_first)
    for offset, categories in enumerate([("neglect",)] * 2 + [("exploitation",)] * 3):
        await api.refer(
            child,
            uk_time(date(2023, 5, 1) + timedelta(days=offset)),
            categories=categories,
        )
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "neglect_referral_share",
        from_="2023-01-01",
        to="2023-06-30",
        period="quarter",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2023-Q1", (4, 11, 36.4)),
        ("2023-Q2", (3, 6, 50.0)),
    ]


async def test_neglect_share_by_neglect_form_is_a_share_of_all_referrals(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    child = new_child()
    may = uk_time(date(2023, 5, 10))
    await api.refer(child, may, neglect_forms=("physical", "nutritional"))
    await api.refer(child, may, neglect_forms=("physical",))
    await api.refer(child, may, categories=("physical_abuse",))
    await api.refer(child, may, neglect_forms=("supervision",))
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "neglect_referral_share",
        from_="2023-05-01",
        to="2023-05-31",
        breakdown="neglect_form",
    )

    assert [(p["group"], figures(p)) for p in series] == [
        ("medical", (0, 4, 0.0)),
        ("nutritional", (1, 4, 25.0)),
        ("emotional", (0, 4, 0.0)),
        ("educational", (0, 4, 0.0)),
        ("physical", (2, 4, 50.0)),
        ("supervision", (1, 4, 25.0)),
    ]


async def test_neglect_share_by_age_band_uses_the_age_on_the_referral_day(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    five_on_10_may = new_child(date_of_birth=date(2018, 5, 10))
    # The API refuses both of these states today (an unborn child due in 2023 is long born, and a
    # born child needs a date of birth), so these two children are inserted directly; their
    # referrals still go through the API, matched by NHS number.
    unborn = await insert_child(
        session_factory, date_of_birth=None, expected_date_of_birth=date(2023, 8, 1), sex="U"
    )
    no_birth_date = await insert_child(session_factory, date_of_birth=None)
    await api.refer(five_on_10_may, uk_time(date(2023, 5, 9)))
    await api.refer(five_on_10_may, uk_time(date(2023, 5, 10)), categories=("other",))
    await api.refer(unborn, uk_time(date(2023, 5, 20)))
    await api.refer(no_birth_date, uk_time(date(2023, 5, 21)), categories=("other",))
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "neglect_referral_share",
        from_="2023-05-01",
        to="2023-05-31",
        breakdown="age_band",
    )

    assert [(p["group"], figures(p)) for p in series] == [
        ("under 1", (1, 1, 100.0)),
        ("1-4", (1, 1, 100.0)),
        ("5-9", (0, 1, 0.0)),
        ("10-15", (0, 0, None)),
        ("16+", (0, 0, None)),
        ("not known", (0, 1, 0.0)),
    ]


async def test_neglect_share_by_referral_source(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    child = new_child()
    may = uk_time(date(2023, 5, 10))
    await api.refer(child, may, referral_source="6")
    await api.refer(child, may, referral_source="6")
    await api.refer(child, may, referral_source="6", categories=("other",))
    await api.refer(child, may, referral_source="2A", categories=("other",))
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "neglect_referral_share",
        from_="2023-05-01",
        to="2023-05-31",
        breakdown="referral_source",
    )

    assert [(p["group"], figures(p)) for p in series] == [
        ("2A", (0, 1, 0.0)),
        ("6", (2, 3, 66.7)),
    ]


# --- rereferral_rate_12m -------------------------------------------------------------------------


async def send_rereferral_history(api: IndicatorApi) -> None:
    """A: 2022-03-15, 2023-03-15 (a year to the day: re-referral), 2023-06-01 (re-referral).
    B: 2022-03-14, 2023-03-15 (a year and a day: not). C: 2023-02-01, a withdrawn 2023-04-01,
    2023-05-01 (re-referral of 2023-02-01). D: a withdrawn 2023-01-10, then 2023-07-01 (not)."""
    a, b, c, d = [new_child() for _ in range(4)]
    history = [
        (a, date(2022, 3, 15), False),
        (a, date(2023, 3, 15), False),
        (a, date(2023, 6, 1), False),
        (b, date(2022, 3, 14), False),
        (b, date(2023, 3, 15), False),
        (c, date(2023, 2, 1), False),
        (c, date(2023, 4, 1), True),
        (c, date(2023, 5, 1), False),
        (d, date(2023, 1, 10), True),
        (d, date(2023, 7, 1), False),
    ]
    # In order of receipt, each withdrawal straight after its referral: a referral counts the
    # child's earlier referrals stored (and not withdrawn) before it.
    for child, day, withdrawn in history:
        await api.refer(child, uk_time(day), withdrawn=withdrawn)


async def test_rereferrals_within_12_months_by_quarter(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    await send_rereferral_history(await indicator_api(client, make_client, session_factory))
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "rereferral_rate_12m",
        from_="2023-01-01",
        to="2023-12-31",
        period="quarter",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2023-Q1", (1, 3, 33.3)),
        ("2023-Q2", (2, 2, 100.0)),
        ("2023-Q3", (0, 1, 0.0)),
        ("2023-Q4", (0, 0, None)),
    ]


async def test_rereferrals_within_12_months_by_financial_year(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    await send_rereferral_history(await indicator_api(client, make_client, session_factory))
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "rereferral_rate_12m",
        from_="2021-04-01",
        to="2024-03-31",
        period="financial_year",
    )

    assert [(p["label"], figures(p)) for p in series] == [
        ("2021-22", (0, 2, 0.0)),
        ("2022-23", (1, 3, 33.3)),
        ("2023-24", (2, 3, 66.7)),
    ]


# --- referral_decision_24h_share -----------------------------------------------------------------


async def test_decisions_within_24_hours_count_exact_hours_across_the_clock_change(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    child = new_child()
    received = uk_time(date(2023, 10, 2), time(9, 0))
    await api.refer(child, received, decided_at=received + timedelta(hours=24))
    await api.refer(child, received, decided_at=received + timedelta(hours=24, minutes=1))
    await api.refer(child, uk_time(date(2023, 10, 5)))
    await api.refer(child, uk_time(date(2023, 10, 6)), withdrawn=True)
    # Clocks went back at 02:00 on 29 October 2023: 10:00 BST to 09:30 GMT is 24.5 hours.
    await api.refer(
        child,
        uk_time(date(2023, 10, 28), time(10, 0)),
        decided_at=uk_time(date(2023, 10, 29), time(9, 30)),
    )
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "referral_decision_24h_share",
        from_="2023-10-01",
        to="2023-10-31",
    )

    assert [(p["label"], figures(p)) for p in series] == [("2023-10", (1, 4, 25.0))]


async def test_referrals_whose_24_hours_are_still_running_are_left_out(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    child = new_child()
    now = datetime.now(UTC)
    await api.refer(child, now - timedelta(hours=1))
    await api.refer(child, now - timedelta(hours=2), decided_at=now - timedelta(hours=1))
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "referral_decision_24h_share",
        from_=(now - timedelta(days=1)).date().isoformat(),
        to=(now + timedelta(days=1)).date().isoformat(),
        period="year",
    )

    numerators = sum(p["numerator"] for p in series)
    denominators = sum(p["denominator"] for p in series)
    assert (numerators, denominators) == (1, 1)


async def test_decisions_within_24_hours_by_agency_type(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    api = await indicator_api(client, make_client, session_factory)
    child = new_child()
    received = uk_time(date(2023, 10, 2), time(9, 0))
    on_time = received + timedelta(hours=3)
    await api.refer(child, received, agency_type="police", decided_at=on_time)
    await api.refer(child, received, agency_type="police")
    await api.refer(child, received, agency_type="health", decided_at=on_time)
    reader = await make_client(READ_UNSUPPRESSED)

    series = await fetch_series(
        client,
        reader.headers,
        "referral_decision_24h_share",
        from_="2023-10-01",
        to="2023-10-31",
        breakdown="agency_type",
    )

    assert [(p["group"], figures(p)) for p in series] == [
        ("health", (1, 1, 100.0)),
        ("police", (1, 2, 50.0)),
    ]
    assert point_for(series, "2023-10", "police")["suppressed"] is False
