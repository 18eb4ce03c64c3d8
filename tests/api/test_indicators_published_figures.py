"""The strategies' published figures, reproduced exactly for `indicators:read:unsuppressed` and
perturbed by the cell-key method for every other reader (issue 14, acceptance 4).

Each test builds a dataset, through the public API, whose figure is one the two strategies
published, with records that a wrong reading would count (a plan that ended on the day, a category
changed later, a plan started just outside the period), so that only the catalogue's definition
gives the published figure:

- 35.2%: referrals in 2023 with neglect as a concern (`neglect_referral_share`);
- 82%: children on a child protection plan under neglect in June 2023, North Somerset's baseline
  (`cp_plan_neglect_share` on 30 June 2023);
- 55%: the low end of SPEC section 1's "55-82% in the two partnerships", children on a child
  protection plan under neglect, taken at a financial year's end (`cp_plan_neglect_share`);
- 64% and 59%: the two partnerships' child protection plans starting under neglect, a calendar
  year and a financial year (`cp_plan_starts_neglect_share`).

A reader without the unsuppressed scope gets the same cells with the noise of the catalogue's
perturbation table (`tests/builders/disclosure.py` states it; `test_indicators_disclosure.py`
checks that the catalogue publishes it). The tests give every record the same key, so each cell
key, and with it the noise, is fixed and non-zero, and the perturbed figure differs from the
published one.
"""

from __future__ import annotations

import random
from datetime import date, time, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from service.db import SessionFactory, transaction
from tests.builders.case_events import cp_plan_category_changed, cp_plan_ended, cp_plan_started
from tests.builders.disclosure import published_rate
from tests.builders.indicators import (
    READ_UNSUPPRESSED,
    KnownChild,
    ReferralSpec,
    fetch_series,
    figures,
    indicator_api,
    insert_children,
    new_child,
    send_as_case_system,
    uk_time,
)
from tests.conftest import ClientMaker, RegisteredClient

# Indicators count whole tables: each test starts from empty domain tables.
pytestmark = pytest.mark.usefixtures("empty_domain_tables")


async def key_every_record(factory: SessionFactory, table: str, key: int) -> None:
    """Give every record of `table` the same `record_key`, so that a cell of n records has the
    cell key n x key (mod 256) on every run."""
    async with transaction(factory) as session:
        await session.execute(
            text(f"UPDATE {table} SET record_key = :key"),  # noqa: S608 (a fixed table name)
            {"key": key},
        )


def perturbed(exact: tuple[int, int, float], record_key: int) -> tuple[int, int, float]:
    """What a reader without the unsuppressed scope is shown for an exact rate whose records all
    have `record_key`: each count plus the stated table's noise for its cell key."""
    numerator, denominator, _ = exact
    return published_rate(numerator, numerator * record_key, denominator, denominator * record_key)


async def both_views(
    client: httpx.AsyncClient,
    make_client: ClientMaker,
    exact_reader: RegisteredClient,
    indicator_id: str,
    **params: str,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(label, numerator, denominator, value) of each point, as the unsuppressed reader and as a
    reader holding `indicators:read` only see them."""
    reader = await make_client(["indicators:read"])
    views = []
    for headers in (exact_reader.headers, reader.headers):
        series = await fetch_series(client, headers, indicator_id, **params)
        views.append([(p["label"], *figures(p)) for p in series])
    return views[0], views[1]


# --- 35.2%: referrals with neglect as a concern ---------------------------------------------------


async def test_35_2_percent_of_referrals_name_neglect_exactly_for_the_unsuppressed_scope(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    # 1,124 referrals in 2023, 396 of them naming neglect (with another category, counted once).
    api = await indicator_api(client, make_client, session_factory)
    rng = random.Random(2023)
    neglect = set(rng.sample(range(1124), 396))
    await api.refer_all(
        [
            ReferralSpec(
                new_child(),
                uk_time(date(2023, 1, 1) + timedelta(days=index % 365), time(9 + index % 8)),
                categories=(
                    ("neglect", "emotional_abuse") if index in neglect else ("physical_abuse",)
                ),
            )
            for index in range(1124)
        ]
    )
    # Outside 2023, and withdrawn: neither counts.
    await api.refer(new_child(), uk_time(date(2022, 12, 31), time(23, 30)))
    await api.refer(new_child(), uk_time(date(2023, 6, 1)), withdrawn=True)
    await key_every_record(session_factory, "referral", 3)
    exact_reader = await make_client(READ_UNSUPPRESSED)

    exact, shown = await both_views(
        client,
        make_client,
        exact_reader,
        "neglect_referral_share",
        from_="2023-01-01",
        to="2023-12-31",
        period="year",
    )

    assert exact == [("2023", 396, 1124, 35.2)]
    # Cell keys 396 x 3 = 1188 (164: +1) and 1124 x 3 = 3372 (44: -1).
    assert shown == [("2023", *perturbed((396, 1124, 35.2), 3))] == [("2023", 397, 1123, 35.4)]


# --- 82% and 55%: children on a child protection plan under neglect -------------------------------


async def test_82_percent_of_children_on_a_cp_plan_on_30_june_2023_are_under_neglect(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    children = iter(await insert_children(session_factory, 60))
    events: list[dict[str, Any]] = []

    def plan(
        category: str, started: date, *changes: tuple[date, str], ended: date | None = None
    ) -> None:
        child: KnownChild = next(children)
        ref = f"CP-{child.nhs_number}"
        events.append(cp_plan_started(child.ref, started, ref, initial_category=category))
        events.extend(cp_plan_category_changed(child.ref, day, ref, to) for day, to in changes)
        if ended is not None:
            events.append(cp_plan_ended(child.ref, ended, ref))

    for index in range(39):  # under neglect from the start, open on 30 June
        plan("NEG", date(2023, 1, 2) + timedelta(days=index * 3))
    for _ in range(2):  # physical abuse at first, neglect since May: the latest category counts
        plan("PHY", date(2023, 2, 1), (date(2023, 5, 2), "NEG"))
    for _ in range(3):  # neglect at first, emotional abuse since April: not neglect on 30 June
        plan("NEG", date(2023, 2, 1), (date(2023, 4, 3), "EMO"))
    for category in ("EMO", "EMO", "PHY", "PHY", "MUL", "MUL"):  # MUL is not neglect
        plan(category, date(2023, 3, 1))
    for ended in (date(2023, 6, 30), date(2023, 6, 30), date(2023, 5, 15), date(2023, 5, 15)):
        plan("NEG", date(2023, 1, 10), ended=ended)  # ended on or before the day: not open
    plan("NEG", date(2023, 7, 3))  # started after it
    exact_reader = await send_as_case_system(client, make_client, events)
    await key_every_record(session_factory, "care_plan", 1)

    exact, shown = await both_views(
        client,
        make_client,
        exact_reader,
        "cp_plan_neglect_share",
        from_="2023-06-01",
        to="2023-06-30",
        period="snapshot",
    )

    assert exact == [("2023-06-30", 41, 50, 82.0)]
    # Cell keys 41 and 50: -1 each (the row for 8 and over, keys 32-95).
    assert (
        shown == [("2023-06-30", *perturbed((41, 50, 82.0), 1))] == [("2023-06-30", 40, 49, 81.6)]
    )


async def test_55_percent_of_children_on_a_cp_plan_at_the_financial_year_end_are_under_neglect(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    children = iter(await insert_children(session_factory, 67))
    events: list[dict[str, Any]] = []

    def plan(category: str, started: date, ended: date | None = None) -> None:
        child = next(children)
        ref = f"CP-{child.nhs_number}"
        events.append(cp_plan_started(child.ref, started, ref, initial_category=category))
        if ended is not None:
            events.append(cp_plan_ended(child.ref, ended, ref))

    for index in range(33):  # under neglect, open on 31 March 2023
        plan("NEG", date(2022, 5, 2) + timedelta(days=index * 7))
    for index, category in enumerate(["EMO"] * 10 + ["PHY"] * 9 + ["SAB"] * 4 + ["MUL"] * 4):
        plan(category, date(2022, 6, 1) + timedelta(days=index * 5))
    for _ in range(5):  # open during the year, ended in January: not open at its end
        plan("NEG", date(2022, 7, 1), ended=date(2023, 1, 16))
    for _ in range(2):  # the next financial year's
        plan("NEG", date(2023, 4, 3))
    exact_reader = await send_as_case_system(client, make_client, events)
    await key_every_record(session_factory, "care_plan", 1)

    exact, shown = await both_views(
        client,
        make_client,
        exact_reader,
        "cp_plan_neglect_share",
        from_="2022-04-01",
        to="2023-03-31",
        period="financial_year",
    )

    assert exact == [("2022-23", 33, 60, 55.0)]
    # Cell keys 33 and 60: -1 each.
    assert shown == [("2022-23", *perturbed((33, 60, 55.0), 1))] == [("2022-23", 32, 59, 54.2)]


# --- 64% and 59%: child protection plans starting under neglect -----------------------------------


async def test_64_percent_of_cp_plans_starting_in_2023_start_under_neglect(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    children = iter(await insert_children(session_factory, 53))
    events: list[dict[str, Any]] = []
    for index in range(32):  # started under neglect in 2023
        child = next(children)
        events.append(
            cp_plan_started(child.ref, date(2023, 1, 4) + timedelta(days=index * 11), "A")
        )
    others = ["EMO"] * 6 + ["PHY"] * 5 + ["MUL"] * 4 + ["SAB"] * 3
    for index, category in enumerate(others):
        child = next(children)
        started = date(2023, 2, 6) + timedelta(days=index * 13)
        events.append(cp_plan_started(child.ref, started, "B", initial_category=category))
        if category == "PHY" and others[:index].count("PHY") < 3:
            # Neglect later in the year: a start counts by its initial category, so not these.
            events.append(cp_plan_category_changed(child.ref, date(2023, 11, 1), "B", "NEG"))
    for _ in range(3):  # started under neglect in December 2022
        child = next(children)
        events.append(cp_plan_started(child.ref, date(2022, 12, 12), "C"))
    exact_reader = await send_as_case_system(client, make_client, events)
    await key_every_record(session_factory, "care_plan", 1)

    exact, shown = await both_views(
        client,
        make_client,
        exact_reader,
        "cp_plan_starts_neglect_share",
        from_="2023-01-01",
        to="2023-12-31",
        period="year",
    )

    assert exact == [("2023", 32, 50, 64.0)]
    # Cell keys 32 and 50: -1 each.
    assert shown == [("2023", *perturbed((32, 50, 64.0), 1))] == [("2023", 31, 49, 63.3)]


async def test_59_percent_of_cp_plans_starting_in_a_financial_year_start_under_neglect(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    children = iter(await insert_children(session_factory, 103))
    events: list[dict[str, Any]] = []
    categories = ["NEG"] * 59 + ["EMO"] * 20 + ["PHY"] * 12 + ["SAB"] * 4 + ["MUL"] * 5
    for index, category in enumerate(categories):  # 1 April 2023 to 31 March 2024
        child = next(children)
        started = date(2023, 4, 1) + timedelta(days=index * 366 // len(categories))
        events.append(cp_plan_started(child.ref, started, "A", initial_category=category))
    # The day before the year and the day after it.
    for started in (date(2023, 3, 31), date(2023, 3, 31), date(2024, 4, 1)):
        child = next(children)
        events.append(cp_plan_started(child.ref, started, "B"))
    exact_reader = await send_as_case_system(client, make_client, events)
    await key_every_record(session_factory, "care_plan", 1)

    exact, shown = await both_views(
        client,
        make_client,
        exact_reader,
        "cp_plan_starts_neglect_share",
        from_="2023-04-01",
        to="2024-03-31",
        period="financial_year",
    )

    assert exact == [("2023-24", 59, 100, 59.0)]
    # Cell keys 59 (-1) and 100 (0, keys 96-159).
    assert shown == [("2023-24", *perturbed((59, 100, 59.0), 1))] == [("2023-24", 58, 100, 58.0)]
