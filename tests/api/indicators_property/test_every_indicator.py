"""Every indicator of the catalogue equals a straightforward reference over the raw tables.

Hypothesis draws small but rich histories (`histories.py`): children of every age band, sex,
ethnicity and disability record, some unborn or with no date of birth; referrals from several
agencies and sources sent out of order (back-loaded), decided in or out of time or not at all,
some withdrawn after later ones were stored; child protection plans one after another (repeat
plans), with category changes sent out of date order (two on one day included), some focused on
domestic abuse; child in need plans; Section 47 enquiries and ICPCs timed in working days around
bank holidays, some never timed, some sent before their enquiry; early help assessments and
step-ups, health appointments, feedback; toolkit assessments and re-assessments with two
toolkits, overrides, grades not known and named previous assessments; case audits with grades.
Records cluster around a day per child, often exactly a day or a year apart.

The history goes in through the public API, the way the service's writers send it. Then every
indicator, for every period type it offers, without a breakdown and with each one it offers, is
served (`served_series`, exact figures) both ways the service serves it, by the live statement
and from the refreshed rollup's stored cells, and compared cell by cell with the reference
(`reference.py`), which follows the catalogue's words and never the service's SQL.

Deterministic (`derandomize`: the same examples every run) and bounded (a few histories, each
checked under every period type): about 500 series per history.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings

from schemas.indicators import PERIODS, Breakdown, Period
from service.db import SessionFactory, transaction
from service.indicators.catalogue import IndicatorMeta, load_catalogue
from service.indicators.compute import compute_series
from service.indicators.rollup import Source, refresh_rollup
from service.toolkits.definition import ToolkitDefinition
from service.toolkits.demo import load_demo_toolkit
from tests.api.indicators_property.histories import (
    FIRST_DAY,
    HISTORY_FIRST,
    LAST_DAY,
    ChildHistory,
    EarlyHelp,
    Enquiry,
    History,
    histories,
    send_history,
)
from tests.api.indicators_property.reference import (
    CHILD_BREAKDOWNS,
    REFERENCES,
    UNIT_BREAKDOWNS,
    Cells,
    expected_series,
    read_rows,
)
from tests.builders.assessments import publish_demo
from tests.builders.case_audits import AUDIT_SCOPES
from tests.builders.indicators import IndicatorApi, clear_domain_tables
from tests.conftest import ClientMaker, RegisteredClient

PROPERTY_PERIODS: tuple[Period, ...] = ("month", "quarter", "year", "financial_year", "snapshot")
SOURCES: tuple[Source, ...] = ("live", "rollup")
"""Both ways the service serves a series: the live statement, and the refreshed rollup."""


async def served_series(
    session_factory: SessionFactory,
    meta: IndicatorMeta,
    period: Period,
    breakdown: Breakdown | None,
    source: Source,
) -> Cells:
    """The exact figures the service serves for the property's range, as reference cells:
    computed by the live statement (`source="live"`) or read from the rollup's stored cells
    (`"rollup"`, which raises rather than fall back to live)."""
    async with session_factory() as session:
        series = await compute_series(
            session,
            meta,
            start=FIRST_DAY,
            end=LAST_DAY,
            period=period,
            breakdown=breakdown,
            unsuppressed=True,
            source=source,
        )
    return {
        (point.period_start, point.period_end, point.group): (
            point.numerator,
            point.denominator,
            point.value,
        )
        for point in series.points
    }


def _differences(got: Cells, expected: Cells) -> list[tuple[object, object, object]]:
    """(cell, served, expected) of every cell where the two differ, for the failure message."""
    return [
        (cell, got.get(cell), expected.get(cell))
        for cell in sorted(set(got) | set(expected), key=repr)
        if got.get(cell) != expected.get(cell)
    ]


@dataclass(frozen=True)
class Writers:
    """The clients that send a history, registered once per test (a registration costs more
    than a request), and the second toolkit some assessments use."""

    api: IndicatorApi
    case_system: RegisteredClient
    auditors: RegisteredClient
    other_toolkit: ToolkitDefinition


@pytest.fixture
async def writers(
    client: httpx.AsyncClient, make_client: ClientMaker, owner_session_factory: SessionFactory
) -> Writers:
    await publish_demo(owner_session_factory)
    api = IndicatorApi(client, make_client)
    return Writers(
        api,
        await make_client(["case-events:write"], agency_type="la"),
        await make_client(AUDIT_SCOPES, agency_type="local_authority"),
        await api.publish_other_toolkit(),
    )


def _child(anchor: date, **records: Any) -> ChildHistory:
    """A child anchored on `anchor` with only the records given."""
    fields: dict[str, Any] = {
        "date_of_birth": date(2015, 5, 5),
        "expected_date_of_birth": None,
        "sex": "F",
        "ethnicity": "WBRI",
        "anchor": (anchor - HISTORY_FIRST).days,
        **{
            name: ()
            for name in (
                "referrals",
                "cp_plans",
                "cin_plans",
                "enquiries",
                "early_help",
                "step_ups",
                "appointments",
                "feedback",
                "assessments",
                "audits",
            )
        },
    }
    return ChildHistory(**{**fields, **records})


def _enquiry(start: int, working_days: int) -> Enquiry:
    return Enquiry(
        start=start,
        near_holiday=None,
        start_recorded=True,
        icpc_after_working_days=working_days,
        categories=("NEG",),
        plan_follows=False,
        icpc_sent_first=False,
    )


_IDENTIFIED = (EarlyHelp(day=0, considered=True, identified=True),)
BOUNDARIES = History(
    children=(
        # Stepped up on the same date a year after the early help assessment: within 12 months;
        # a day later: not. 29 February a year on is the 28th.
        _child(date(2023, 6, 1), early_help=_IDENTIFIED, step_ups=(366,)),
        _child(date(2023, 6, 1), early_help=_IDENTIFIED, step_ups=(367,)),
        _child(date(2024, 2, 29), early_help=_IDENTIFIED, step_ups=(365,)),
        # Two conferences of one child on one day (26 June 2023), one 15 working days after its
        # enquiry began, the other 24 (a bank holiday between): each counts, not the day.
        _child(date(2023, 6, 5), enquiries=(_enquiry(0, 15), _enquiry(-14, 24))),
    ),
    seed=7,
)
"""Boundaries the drawn histories reach only by chance, each where a plausible mistake in the
SQL (a day's records counted once, a strict inequality at 12 months) changes a figure."""


@settings(
    max_examples=4,
    derandomize=True,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(history=histories())
@example(history=BOUNDARIES)
async def test_every_indicator_equals_the_reference_over_the_raw_tables(
    history: History,
    writers: Writers,
    client: httpx.AsyncClient,
    session_factory: SessionFactory,
    owner_session_factory: SessionFactory,
) -> None:
    await clear_domain_tables(owner_session_factory)
    await send_history(
        history,
        writers.api,
        writers.case_system,
        writers.auditors,
        writers.other_toolkit,
        client,
        session_factory,
    )
    demo = load_demo_toolkit()
    rows = await read_rows(
        owner_session_factory,
        {
            demo.id: demo.concern_grade,
            writers.other_toolkit.id: writers.other_toolkit.concern_grade,
        },
    )
    # The rollup's cells are the live statement's output over the whole history, stored: a
    # period's figures must not depend on the range the refresh computed them over.
    async with transaction(session_factory) as session:
        assert await refresh_rollup(session) is not None
    for period, meta in itertools.product(PROPERTY_PERIODS, load_catalogue().values()):
        if period not in meta.periods:
            continue
        for breakdown in (None, *meta.breakdowns):
            expected = expected_series(rows, meta, period, breakdown, FIRST_DAY, LAST_DAY)
            for source in SOURCES:
                got = await served_series(session_factory, meta, period, breakdown, source)
                assert got == expected, (
                    source,
                    meta.id,
                    period,
                    breakdown,
                    _differences(got, expected),
                )


def test_the_property_covers_every_indicator_period_and_breakdown_of_the_catalogue() -> None:
    """A new indicator, period type or breakdown cannot go unchecked by the property."""
    catalogue = load_catalogue()
    assert sorted(REFERENCES) == sorted(catalogue)
    assert sorted(PROPERTY_PERIODS) == sorted(PERIODS)
    for indicator_id, meta in catalogue.items():
        grouped_by = CHILD_BREAKDOWNS | UNIT_BREAKDOWNS.get(indicator_id, frozenset())
        assert sorted(meta.breakdowns) == sorted(grouped_by), indicator_id
