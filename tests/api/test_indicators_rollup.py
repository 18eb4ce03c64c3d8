"""The indicator rollup (`service.indicators.rollup`): series served from the stored cells equal
the live series, for every indicator, period type and breakdown, with and without disclosure
control; a write makes the cells not current (live figures, or stale ones that say how old they
are), a rolled-back one does not; the ETag changes only when a figure does.

The history is the demo partnership (`load_demo_data`): back-loaded referrals, withdrawals,
decisions, plans whose category changes, re-assessments, case events and audits.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from datetime import date

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from schemas.indicators import Breakdown, Period
from service.db import SessionFactory, transaction
from service.demo.generator import DemoOptions, load_demo_data
from service.indicators.catalogue import load_catalogue
from service.indicators.compute import IndicatorSeries, compute_series
from service.indicators.rollup import (
    TRACKED_TABLES,
    RollupState,
    read_rollup_state,
    refresh_periodically,
    refresh_rollup,
)
from service.indicators.sql import build_series_sql
from tests.builders.indicators import READ_UNSUPPRESSED, clear_domain_tables
from tests.conftest import TEST_KEY_ENCRYPTION_KEY, ClientMaker, RegisteredClient

OPTIONS = DemoOptions(children=90, seed=11, start=date(2023, 1, 1), end=date(2024, 12, 31))

EVERY_SERIES: list[tuple[str, Period, Breakdown | None]] = [
    (meta.id, period, breakdown)
    for meta in load_catalogue().values()
    for period in meta.periods
    for breakdown in (None, *meta.breakdowns)
]
# The whole history, and a range starting and ending mid-period inside it.
RANGES = ((date(2023, 1, 1), date(2024, 12, 31)), (date(2023, 5, 10), date(2024, 2, 3)))


async def _clear_rollup(factory: SessionFactory) -> None:
    async with transaction(factory) as session:
        await session.execute(text("DELETE FROM indicator_cell"))
        await session.execute(text("DELETE FROM indicator_rollup"))
        await session.execute(text("DELETE FROM indicator_change"))


@pytest.fixture
async def history(owner_session_factory: SessionFactory) -> AsyncIterator[None]:
    await clear_domain_tables(owner_session_factory)
    await _clear_rollup(owner_session_factory)
    async with transaction(owner_session_factory) as session:
        await load_demo_data(session, OPTIONS)
    yield
    await clear_domain_tables(owner_session_factory)
    await _clear_rollup(owner_session_factory)


async def _refresh(factory: SessionFactory, jobs: int = 1) -> None:
    async with transaction(factory) as session:
        refreshed = await refresh_rollup(session, helpers=factory, jobs=jobs)
    assert refreshed is not None


async def _state(factory: SessionFactory) -> RollupState:
    async with transaction(factory) as session:
        state = await read_rollup_state(session)
    assert state is not None
    return state


async def _series(
    factory: SessionFactory,
    indicator_id: str,
    period: Period,
    breakdown: Breakdown | None,
    *,
    source: str = "auto",
    unsuppressed: bool = True,
    span: tuple[date, date] = RANGES[0],
    max_staleness_s: float = 0.0,
) -> IndicatorSeries:
    async with transaction(factory) as session:
        return await compute_series(
            session,
            load_catalogue()[indicator_id],
            start=span[0],
            end=span[1],
            period=period,
            breakdown=breakdown,
            unsuppressed=unsuppressed,
            max_staleness_s=max_staleness_s,
            source=source,  # type: ignore[arg-type]
        )


async def _mismatches(factory: SessionFactory, *, suppressed_too: bool) -> list[str]:
    """Every series (and range) whose rollup points differ from its live points."""
    found = []
    for indicator_id, period, breakdown in EVERY_SERIES:
        for span in RANGES:
            for unsuppressed in (True, False) if suppressed_too else (True,):
                stored = await _series(
                    factory,
                    indicator_id,
                    period,
                    breakdown,
                    source="rollup",
                    unsuppressed=unsuppressed,
                    span=span,
                )
                live = await _series(
                    factory,
                    indicator_id,
                    period,
                    breakdown,
                    source="live",
                    unsuppressed=unsuppressed,
                    span=span,
                )
                assert stored.served_from == "rollup"
                assert live.served_from == "live"
                if stored.points != live.points:
                    found.append(f"{indicator_id} {period} {breakdown} {span} {unsuppressed}")
    return found


async def test_every_series_from_the_rollup_equals_the_live_series(
    history: None, session_factory: SessionFactory
) -> None:
    # Computed by three sessions in the refresh's snapshot (the others refresh in one).
    await _refresh(session_factory, jobs=3)

    assert await _mismatches(session_factory, suppressed_too=True) == []
    # A history this size fills cells: the comparison is not of zeros.
    live = await _series(session_factory, "neglect_referral_share", "month", None, source="live")
    assert sum(point.denominator or 0 for point in live.points) > 50


async def test_the_current_rollup_is_served_without_a_time(
    history: None, session_factory: SessionFactory
) -> None:
    await _refresh(session_factory)

    series = await _series(session_factory, "neglect_plans_open", "snapshot", "plan_type")

    assert series.served_from == "rollup"
    assert series.figures_as_of is None


# Writes the live query must reflect: a back-loaded referral (a copy of one, received a year
# earlier), a withdrawal, a plan's category changed, a re-assessment's grade changed.
_WRITES = (
    """INSERT INTO referral
       SELECT (jsonb_populate_record(NULL::referral, to_jsonb(r) || jsonb_build_object(
           'id', gen_random_uuid(), 'external_reference', 'back-' || r.id,
           'received_at', r.received_at - interval '1 year',
           'decision_due_at', r.decision_due_at - interval '1 year'))).*
       FROM referral r WHERE r.status <> 'withdrawn' AND r.received_at >= '2024-01-01'
       ORDER BY r.received_at LIMIT 3""",
    """UPDATE referral SET status = 'withdrawn' WHERE id IN (
           SELECT id FROM referral WHERE status <> 'withdrawn' ORDER BY received_at LIMIT 5)""",
    """INSERT INTO care_plan_category_change (care_plan_id, changed_on, category, case_event_id)
       SELECT p.id, p.started_on + 30, CASE WHEN p.initial_category = 'NEG' THEN 'EMO' ELSE 'NEG'
           END, (SELECT e.id FROM case_event e ORDER BY e.id LIMIT 1)
       FROM care_plan p WHERE p.plan_type = 'cp' ORDER BY p.started_on, p.id LIMIT 3""",
    """UPDATE assessment a SET highest_area_grade = CASE WHEN a.highest_area_grade > 1
           THEN a.highest_area_grade - 1 ELSE 4 END
       WHERE a.highest_area_grade IS NOT NULL AND a.id IN (
           SELECT later.id FROM assessment later WHERE EXISTS (
               SELECT 1 FROM assessment earlier
               WHERE earlier.child_id = later.child_id AND earlier.toolkit_id = later.toolkit_id
                 AND earlier.completed_on < later.completed_on)
           ORDER BY later.id LIMIT 5)""",
)


async def test_writes_after_a_refresh_serve_live_figures_until_the_next_refresh(
    history: None, session_factory: SessionFactory, owner_session_factory: SessionFactory
) -> None:
    await _refresh(session_factory)
    before = await _series(session_factory, "neglect_referral_share", "month", None)
    async with transaction(owner_session_factory) as session:
        for statement in _WRITES:
            assert (await session.execute(text(statement))).rowcount > 0  # type: ignore[attr-defined]

    assert not (await _state(session_factory)).current
    after = await _series(session_factory, "neglect_referral_share", "month", None)
    assert after.served_from == "live"
    assert after.points != before.points
    # The stored cells still hold the figures before the writes.
    stored = await _series(
        session_factory, "neglect_referral_share", "month", None, source="rollup"
    )
    assert stored.points == before.points

    await _refresh(session_factory)

    assert (await _state(session_factory)).current
    assert await _mismatches(session_factory, suppressed_too=False) == []


async def test_a_stale_rollup_within_the_allowed_age_is_served_with_its_time(
    history: None, session_factory: SessionFactory, owner_session_factory: SessionFactory
) -> None:
    await _refresh(session_factory)
    state = await _state(session_factory)
    async with transaction(owner_session_factory) as session:
        await session.execute(text(_WRITES[1]))

    stale = await _series(
        session_factory, "neglect_referral_share", "month", None, max_staleness_s=3600
    )
    too_old = await _series(
        session_factory, "neglect_referral_share", "month", None, max_staleness_s=0
    )

    assert stale.served_from == "rollup"
    assert stale.figures_as_of == state.figures_as_of
    assert too_old.served_from == "live"
    assert too_old.figures_as_of is None


async def test_a_rolled_back_write_leaves_the_rollup_current(
    history: None, session_factory: SessionFactory, owner_session_factory: SessionFactory
) -> None:
    await _refresh(session_factory)

    async with owner_session_factory() as session:
        await session.execute(text(_WRITES[1]))
        await session.execute(text(_WRITES[2]))
        noted = (await session.execute(text("SELECT count(*) FROM indicator_change"))).scalar()
        await session.rollback()

    assert noted == 1  # one note per transaction, however many statements write
    assert (await _state(session_factory)).current
    async with transaction(session_factory) as session:
        left = (await session.execute(text("SELECT count(*) FROM indicator_change"))).scalar()
    assert left == 0


async def test_a_refresh_prunes_the_notes_its_snapshot_saw(
    history: None, session_factory: SessionFactory, owner_session_factory: SessionFactory
) -> None:
    async with transaction(owner_session_factory) as session:
        await session.execute(text(_WRITES[1]))
    async with transaction(session_factory) as session:
        before = (await session.execute(text("SELECT count(*) FROM indicator_change"))).scalar_one()

    await _refresh(session_factory)

    async with transaction(session_factory) as session:
        after = (await session.execute(text("SELECT count(*) FROM indicator_change"))).scalar_one()
    assert before >= 1  # the history's load, and the write
    assert after == 0


async def test_the_rollup_is_not_current_once_an_undecided_referral_passes_its_deadline(
    history: None, session_factory: SessionFactory, owner_session_factory: SessionFactory
) -> None:
    # Its deadline passing moves `referral_decision_24h_share` with no write at all.
    async with transaction(owner_session_factory) as session:
        due = (
            await session.execute(
                text(
                    "UPDATE referral SET decided_at = NULL, decision_outcome = NULL, "
                    "decision = NULL, status = 'received', "
                    "decision_due_at = date_trunc('second', now()) + interval '1 hour' "
                    "WHERE id = (SELECT id FROM referral ORDER BY received_at DESC LIMIT 1) "
                    "RETURNING decision_due_at"
                )
            )
        ).scalar_one()
    await _refresh(session_factory)
    assert (await _state(session_factory)).current
    async with transaction(session_factory) as session:
        valid_until = (
            await session.execute(text("SELECT valid_until FROM indicator_rollup"))
        ).scalar_one()
        # The clock reaching it (no trigger notes a change of the rollup's own state).
        await session.execute(
            text("UPDATE indicator_rollup SET valid_until = now() - interval '1 second'")
        )

    assert valid_until == due
    assert not (await _state(session_factory)).current
    series = await _series(session_factory, "referral_decision_24h_share", "month", None)
    assert series.served_from == "live"


async def test_cells_of_another_definition_are_never_current(
    history: None, session_factory: SessionFactory
) -> None:
    await _refresh(session_factory)
    async with transaction(session_factory) as session:
        await session.execute(text("UPDATE indicator_rollup SET definition_sha256 = 'older'"))

    assert not (await _state(session_factory)).current


async def test_a_range_the_rollup_does_not_cover_is_served_live(
    history: None, session_factory: SessionFactory
) -> None:
    await _refresh(session_factory)

    series = await _series(
        session_factory,
        "neglect_referral_share",
        "month",
        None,
        span=(date(2019, 1, 1), date(2023, 3, 31)),
    )

    assert series.served_from == "live"


async def test_every_table_an_indicator_reads_notes_its_writes(
    session_factory: SessionFactory,
) -> None:
    read = set()
    for indicator_id, period, breakdown in EVERY_SERIES:
        statement = build_series_sql(
            indicator_id, load_catalogue()[indicator_id].unit, period, breakdown
        )
        read |= set(re.findall(r"\b(?:FROM|JOIN)\s+([a-z_][a-z0-9_]*)\b", statement))
    async with transaction(session_factory) as session:
        tables = set(
            (
                await session.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
            ).scalars()
        )
        triggered = set(
            (
                await session.execute(
                    text(
                        "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                        "WHERE t.tgname = 'indicator_change_noted'"
                    )
                )
            ).scalars()
        )

    assert read & tables == set(TRACKED_TABLES)
    assert triggered == set(TRACKED_TABLES)


@pytest.fixture
async def unsuppressed_reader(app: FastAPI) -> RegisteredClient:
    return await ClientMaker(app)(READ_UNSUPPRESSED)


async def _get(
    client: httpx.AsyncClient, reader: RegisteredClient, **params: str
) -> httpx.Response:
    response = await client.get(
        "/v1/indicators/neglect_referral_share",
        params={"from": "2023-01-01", "to": "2024-12-31", "period": "month", **params},
        headers=reader.headers,
    )
    assert response.status_code == 200, response.text
    return response


async def test_the_etag_changes_only_when_a_figure_changes(
    history: None,
    app: FastAPI,
    client: httpx.AsyncClient,
    unsuppressed_reader: RegisteredClient,
    session_factory: SessionFactory,
    owner_session_factory: SessionFactory,
) -> None:
    live = await _get(client, unsuppressed_reader)
    await _refresh(session_factory)
    served = await _get(client, unsuppressed_reader)
    # A write that changes no figure of this series (a referral's outcome).
    async with transaction(owner_session_factory) as session:
        await session.execute(text("UPDATE referral SET urgent = NOT urgent WHERE false"))
    unchanged = await _get(client, unsuppressed_reader)
    async with transaction(owner_session_factory) as session:
        await session.execute(text(_WRITES[1]))
    changed = await _get(client, unsuppressed_reader)

    assert served.json()["figures_as_of"] is None
    assert served.headers["ETag"] == live.headers["ETag"]
    assert unchanged.headers["ETag"] == served.headers["ETag"]
    assert changed.headers["ETag"] != unchanged.headers["ETag"]
    assert "X-Figures-As-Of" not in changed.headers


async def test_a_stale_answer_says_how_old_its_figures_are(
    history: None,
    app: FastAPI,
    client: httpx.AsyncClient,
    unsuppressed_reader: RegisteredClient,
    session_factory: SessionFactory,
    owner_session_factory: SessionFactory,
) -> None:
    await _refresh(session_factory)
    state = await _state(session_factory)
    current = await _get(client, unsuppressed_reader)
    async with transaction(owner_session_factory) as session:
        await session.execute(text(_WRITES[1]))
    settings = app.state.settings
    app.state.settings = settings.model_copy(update={"indicator_max_staleness_s": 3600.0})
    try:
        stale = await _get(client, unsuppressed_reader)
        stale_csv = await client.get(
            "/v1/indicators/neglect_referral_share",
            params={"from": "2023-01-01", "to": "2024-12-31", "period": "month"},
            headers={**unsuppressed_reader.headers, "Accept": "text/csv"},
        )
    finally:
        app.state.settings = settings

    assert stale.json()["series"] == current.json()["series"]
    as_of = stale.json()["figures_as_of"]
    assert as_of is not None
    assert date.fromisoformat(as_of[:10]) == state.figures_as_of.date()
    assert stale.headers["X-Figures-As-Of"] == state.figures_as_of.isoformat()
    assert stale_csv.headers["X-Figures-As-Of"] == state.figures_as_of.isoformat()
    assert stale.headers["ETag"] != current.headers["ETag"]


async def _cli(runtime_database_url: str, *arguments: str) -> str:
    process = await asyncio.create_subprocess_exec(
        os.path.join(os.path.dirname(sys.executable), "neglect-service"),
        "indicators",
        "refresh",
        *arguments,
        env={
            **os.environ,
            "DATABASE_URL": runtime_database_url,
            "NEGLECT_ENV": "production",
            "NEGLECT_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_the_refresh_command_refreshes_only_when_asked_or_needed(
    history: None, session_factory: SessionFactory, runtime_database_url: str
) -> None:
    first = await _cli(runtime_database_url, "--if-changed")
    second = await _cli(runtime_database_url, "--if-changed")

    assert "rollup refreshed" in first
    assert "not refreshed" in second
    assert (await _state(session_factory)).current


async def test_the_worker_loop_refreshes_after_writes_and_only_then(
    history: None, session_factory: SessionFactory, owner_session_factory: SessionFactory
) -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(refresh_periodically(session_factory, 0.05, stop))
    try:
        async with asyncio.timeout(300):
            while (state := await _state_or_none(session_factory)) is None or not state.current:
                await asyncio.sleep(0.1)
        first = state.figures_as_of
        await asyncio.sleep(0.5)  # checks with nothing to do
        unchanged = await _state(session_factory)
        async with transaction(owner_session_factory) as session:
            await session.execute(text(_WRITES[1]))
        async with asyncio.timeout(300):
            while not (state := await _state(session_factory)).current:
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        refreshes = await loop

    assert unchanged.figures_as_of == first
    assert state.figures_as_of > first
    assert refreshes == 2


async def _state_or_none(factory: SessionFactory) -> RollupState | None:
    async with transaction(factory) as session:
        return await read_rollup_state(session)
