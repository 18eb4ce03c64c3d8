"""The indicator rollup: every series' cells stored as the live statement computed them, served
while they are exact (or no older than a configured age), so that a series costs an index range
read instead of a scan of the history.

The live statement (`sql.build_series_sql`) stays the one definition of every figure: a refresh
runs it for every indicator, offered period type and breakdown (and none) over the whole covered
history, inside one REPEATABLE READ transaction, and stores its rows unchanged in
`indicator_cell`, each with its place in the output (`position`) and whether its group had units
in its period (`seen`). A period's figures do not depend on the range asked for (every units
query reads what a period needs whatever the range), so a narrower range is those periods' rows,
with the range's own groups: the fixed ones, and the others seen in some period of it.

Knowing when the cells are exact: a statement trigger (`rollup.sql`) on every table an indicator
reads notes each writing transaction once in `indicator_change` (its transaction id; rolled back
with it). The refresh records its snapshot (`pg_current_snapshot()`), so the cells are *current*
for a reader when every noted transaction the reader can see was visible to that snapshot; one
index probe on the transaction ids from the snapshot's xmin answers it. A refresh prunes the
notes its snapshot saw. One figure also reads the clock (a referral undecided past its deadline
joins the 24-hour decision share's denominator): the refresh records the earliest such deadline
still ahead (`valid_until`), and the cells are not current from then on.

Cost of a write: the trigger's setting read per statement, and one row per transaction.
"""

# The two f-strings below interpolate only this package's constant zone name.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from typing import Any, Final, Literal

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.indicators import Breakdown, Period
from service.indicators.catalogue import load_catalogue
from service.indicators.periods import Bucket, period_bounds
from service.indicators.sql import FIXED_GROUPS, UK_ZONE, build_series_sql, series_parameters

logger = logging.getLogger(__name__)

TRACKED_TABLES: Final = (
    "referral",
    "child",
    "care_plan",
    "care_plan_category_change",
    "section47_enquiry",
    "icpc",
    "case_event",
    "assessment",
    "case_audit",
)
"""Every table an indicator series reads: each has the `indicator_change_noted` trigger."""

_REFRESH_LOCK: Final = 0x6E6C7275
"""One refresh at a time per database (an arbitrary constant, as service.auth.keys does)."""

Source = Literal["auto", "live", "rollup"]


class RollupUnavailable(LookupError):
    """The rollup cannot serve this series (never refreshed, or the range is not covered)."""


@dataclass(frozen=True, slots=True)
class RollupState:
    """What `indicator_rollup` says, as a reader sees it now."""

    figures_as_of: datetime
    covered_from: date
    covered_to: date
    current: bool
    """No write the reader can see is missing from the cells, the clock has not passed
    `valid_until`, and the series definitions are the ones the cells were computed with."""
    age_s: float
    refresh_seconds: float


@dataclass(frozen=True, slots=True)
class Refreshed:
    figures_as_of: datetime
    covered_from: date
    covered_to: date
    series: int
    cells: int
    seconds: float
    slowest: list[tuple[str, float]]
    """The five series whose statements took longest, with their seconds."""


def _series_keys() -> list[tuple[str, Period, Breakdown | None]]:
    return [
        (meta.id, period, breakdown)
        for meta in load_catalogue().values()
        for period in meta.periods
        for breakdown in (None, *meta.breakdowns)
    ]


@cache
def definition_sha256() -> str:
    """A hash of every series statement and its fixed parameters: cells computed by another
    definition (a deployment changed an indicator) are never current."""
    digest = hashlib.sha256()
    catalogue = load_catalogue()
    for indicator_id, period, breakdown in _series_keys():
        statement = build_series_sql(indicator_id, catalogue[indicator_id].unit, period, breakdown)
        digest.update(f"{indicator_id}|{period}|{breakdown}|{statement}".encode())
        groups = FIXED_GROUPS[breakdown] if breakdown else ()
        digest.update(repr(groups).encode())
    return digest.hexdigest()


_STATE_SQL = f"""
SELECT r.figures_as_of, r.covered_from, r.covered_to, r.definition_sha256, r.refresh_seconds,
       extract(epoch FROM now() - r.figures_as_of)::float8 AS age_s,
       (r.valid_until IS NOT NULL AND now() >= r.valid_until) OR EXISTS (
           SELECT 1 FROM indicator_change c
           WHERE c.xid >= pg_snapshot_xmin(r.snapshot::pg_snapshot)::text::bigint
             AND NOT pg_visible_in_snapshot(c.xid::text::xid8, r.snapshot::pg_snapshot)
       ) AS changed,
       (now() AT TIME ZONE '{UK_ZONE}')::date AS today
FROM indicator_rollup r
WHERE r.singleton = 1
"""


async def read_rollup_state(session: AsyncSession) -> RollupState | None:
    """The rollup's state as this session's snapshot sees it; None if it was never refreshed."""
    row = (await session.execute(text(_STATE_SQL))).one_or_none()
    if row is None:
        return None
    return RollupState(
        figures_as_of=row.figures_as_of,
        covered_from=row.covered_from,
        covered_to=row.covered_to,
        current=not row.changed and row.definition_sha256 == definition_sha256(),
        age_s=max(0.0, float(row.age_s)),
        refresh_seconds=float(row.refresh_seconds),
    )


def covers(state: RollupState, period: Period, buckets: list[Bucket]) -> bool:
    """Whether the cells hold every bucket of the request."""
    covered = period_bounds(state.covered_from, state.covered_to, period)
    return covered[0][0] <= buckets[0][0] and buckets[-1][0] <= covered[-1][0]


_CELLS_SQL = """
SELECT c.period_start, c.period_end, c.grp, c.seen, c.num, c.den, c.nkey, c.dkey, c.value
FROM indicator_cell c
WHERE c.indicator_id = :indicator_id AND c.period = :period AND c.breakdown = :breakdown
  AND c.period_start BETWEEN :first AND :last
ORDER BY c.period_start, c.position
"""


async def read_cells(
    session: AsyncSession,
    indicator_id: str,
    period: Period,
    breakdown: Breakdown | None,
    buckets: list[Bucket],
) -> list[Any]:
    """The stored rows of the series over `buckets`, as the live statement would return them
    for that range: the same columns, groups and order. The stored cells have the groups of the
    whole history; the range keeps the totals, the fixed groups and the groups seen in some
    period of it (chosen here rather than by a second scan of the range in SQL)."""
    result = await session.execute(
        text(_CELLS_SQL),
        {
            "indicator_id": indicator_id,
            "period": period,
            "breakdown": breakdown or "",
            "first": buckets[0][0],
            "last": buckets[-1][0],
        },
    )
    rows = list(result.all())
    # By position (grp, seen: the 3rd and 4th columns): a Row's attribute is a lookup by name.
    kept = {row[2] for row in rows if row[3]}
    kept.update(FIXED_GROUPS[breakdown] if breakdown else ())
    return [row for row in rows if row[2] is None or row[2] in kept]


# The first and last day anything an indicator counts can fall on: a unit's day is a referral's
# day, a plan's start (or a later day it is open), a conference, an event, an assessment, an audit.
_DATA_DAYS_SQL = f"""
SELECT min(lo) AS earliest, max(hi) AS latest FROM (
    SELECT (min(received_at) AT TIME ZONE '{UK_ZONE}')::date AS lo,
           (max(received_at) AT TIME ZONE '{UK_ZONE}')::date AS hi FROM referral
    UNION ALL SELECT min(started_on), max(greatest(started_on, ended_on)) FROM care_plan
    UNION ALL SELECT min(changed_on), max(changed_on) FROM care_plan_category_change
    UNION ALL SELECT min(held_on), max(held_on) FROM icpc
    UNION ALL SELECT min(occurred_on), max(occurred_on) FROM case_event
    UNION ALL SELECT min(completed_on), max(completed_on) FROM assessment
    UNION ALL SELECT min(audited_on), max(audited_on) FROM case_audit
) days
"""

# The earliest instant the clock alone changes a figure: a referral still undecided when its
# decision was due joins the denominator of `referral_decision_24h_share` (its `now()`).
_VALID_UNTIL_SQL = """
SELECT min(decision_due_at) FROM referral
WHERE decided_at IS NULL AND status <> 'withdrawn' AND decision_due_at > now()
"""

_INSERT_CELLS_SQL = """
INSERT INTO indicator_cell (
    indicator_id, period, breakdown, position, period_start, period_end, grp, seen, num, den,
    nkey, dkey, value
)
SELECT :indicator_id, :period, :breakdown, t.*
FROM unnest(
    CAST(:positions AS int[]), CAST(:starts AS date[]), CAST(:ends AS date[]),
    CAST(:groups AS text[]), CAST(:seen AS boolean[]), CAST(:nums AS bigint[]),
    CAST(:dens AS bigint[]), CAST(:nkeys AS bigint[]), CAST(:dkeys AS bigint[]),
    CAST(:values AS numeric[])
) AS t
"""

_STORE_STATE_SQL = """
INSERT INTO indicator_rollup (
    singleton, snapshot, figures_as_of, valid_until, covered_from, covered_to, definition_sha256,
    refresh_seconds
) VALUES (1, :snapshot, :figures_as_of, :valid_until, :covered_from, :covered_to, :definition,
          :seconds)
ON CONFLICT (singleton) DO UPDATE SET
    snapshot = EXCLUDED.snapshot, figures_as_of = EXCLUDED.figures_as_of,
    valid_until = EXCLUDED.valid_until, covered_from = EXCLUDED.covered_from,
    covered_to = EXCLUDED.covered_to, definition_sha256 = EXCLUDED.definition_sha256,
    refresh_seconds = EXCLUDED.refresh_seconds
"""

# The notes the refresh's snapshot saw are in its cells.
_PRUNE_SQL = """
DELETE FROM indicator_change c
WHERE c.xid < pg_snapshot_xmin(CAST(CAST(:snapshot AS text) AS pg_snapshot))::text::bigint
   OR pg_visible_in_snapshot(c.xid::text::xid8, CAST(CAST(:snapshot AS text) AS pg_snapshot))
"""


def needs_refresh(state: RollupState | None, today: date) -> bool:
    """Never refreshed, not current, or not covering next year to its end."""
    return state is None or not state.current or state.covered_to < date(today.year + 1, 12, 31)


async def refresh_rollup(
    session: AsyncSession,
    *,
    only_if_needed: bool = False,
    helpers: async_sessionmaker[AsyncSession] | None = None,
    jobs: int = 1,
) -> Refreshed | None:
    """Recompute every cell in one REPEATABLE READ transaction: the session's transaction, which
    must not have run anything yet; the caller commits. None when another refresh is running, or
    (`only_if_needed`) when the cells are current and cover next year.

    With `helpers` and `jobs` over 1, that many sessions from `helpers` compute the series at
    once, each importing this transaction's snapshot (`pg_export_snapshot`), so the figures are
    still those of one moment; this session stores them.

    The covered days run from 1 January of the year of the earliest day any indicator counts (or
    of today, with no data) to 31 December of the year after the later of today and the latest
    such day; a request outside them is answered live.
    """
    started = time.perf_counter()
    await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    locked = (
        await session.execute(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _REFRESH_LOCK}
        )
    ).scalar_one()
    if not locked:
        return None
    today = (
        await session.execute(text(f"SELECT (now() AT TIME ZONE '{UK_ZONE}')::date"))
    ).scalar_one()
    if only_if_needed and not needs_refresh(await read_rollup_state(session), today):
        return None
    # Full-history statements take longer than a request may; jit as in `compute_series`.
    await session.execute(text("SET LOCAL statement_timeout = 0"))
    await session.execute(text("SET LOCAL jit = off"))
    snapshot, figures_as_of = (
        await session.execute(text("SELECT pg_current_snapshot()::text, now()"))
    ).one()
    days = (await session.execute(text(_DATA_DAYS_SQL))).one()
    earliest = min(days.earliest or today, today)
    latest = max(days.latest or today, today)
    covered_from, covered_to = date(earliest.year, 1, 1), date(latest.year + 1, 12, 31)
    valid_until = (await session.execute(text(_VALID_UNTIL_SQL))).scalar_one()

    await session.execute(text("DELETE FROM indicator_cell"))
    keys = _series_keys()
    computed: asyncio.Queue[_Computed] = asyncio.Queue(maxsize=2 * max(jobs, 1))
    series = cells = 0
    timings: list[tuple[str, float]] = []

    async def store() -> None:
        nonlocal series, cells
        for _ in keys:
            key, rows, seconds = await computed.get()
            await _store_series(session, key, rows)
            computed.task_done()
            name = f"{key[0]} {key[1]}" + (f" by {key[2]}" if key[2] else "")
            timings.append((name, seconds))
            series += 1
            cells += len(rows)

    async with asyncio.TaskGroup() as group:
        if helpers is None or jobs <= 1:
            group.create_task(_compute(session, keys, covered_from, covered_to, computed))
        else:
            # Helpers read in this transaction's snapshot: the figures are those of one moment.
            exported = (await session.execute(text("SELECT pg_export_snapshot()"))).scalar_one()
            pending = list(reversed(keys))
            for _ in range(jobs):
                group.create_task(
                    _compute_in_helper(
                        helpers, exported, pending, covered_from, covered_to, computed
                    )
                )
        group.create_task(store())
    await session.execute(text(_PRUNE_SQL), {"snapshot": snapshot})
    seconds = time.perf_counter() - started
    await session.execute(
        text(_STORE_STATE_SQL),
        {
            "snapshot": snapshot,
            "figures_as_of": figures_as_of,
            "valid_until": valid_until,
            "covered_from": covered_from,
            "covered_to": covered_to,
            "definition": definition_sha256(),
            "seconds": seconds,
        },
    )
    return Refreshed(
        figures_as_of=figures_as_of,
        covered_from=covered_from,
        covered_to=covered_to,
        series=series,
        cells=cells,
        seconds=seconds,
        slowest=sorted(timings, key=lambda timing: -timing[1])[:5],
    )


_Key = tuple[str, Period, Breakdown | None]
_Computed = tuple[_Key, list[Any], float]
_SNAPSHOT_ID: Final = re.compile(r"^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$")


async def _series_rows(
    session: AsyncSession, key: _Key, covered_from: date, covered_to: date
) -> list[Any]:
    indicator_id, period, breakdown = key
    buckets = [(start, end) for start, end, _ in period_bounds(covered_from, covered_to, period)]
    unit = load_catalogue()[indicator_id].unit
    statement = build_series_sql(indicator_id, unit, period, breakdown)
    params = series_parameters(indicator_id, period, breakdown, buckets)
    return list((await session.execute(text(statement), params)).all())


async def _compute(
    session: AsyncSession,
    keys: list[_Key],
    covered_from: date,
    covered_to: date,
    computed: asyncio.Queue[_Computed],
) -> None:
    """Every series in the refresh's own session, one after the other (storing each before
    the next is computed: one session runs one statement at a time)."""
    for key in keys:
        started = time.perf_counter()
        rows = await _series_rows(session, key, covered_from, covered_to)
        await computed.put((key, rows, time.perf_counter() - started))
        await computed.join()


async def _compute_in_helper(
    helpers: async_sessionmaker[AsyncSession],
    exported: str,
    pending: list[_Key],
    covered_from: date,
    covered_to: date,
    computed: asyncio.Queue[_Computed],
) -> None:
    """Series taken from `pending` until none is left, in a session of their own that reads in
    the exported snapshot `exported`."""
    if not _SNAPSHOT_ID.match(exported):
        raise ValueError(f"unexpected snapshot id {exported!r}")
    async with helpers() as helper, helper.begin():
        await helper.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        # The id is checked above; SET TRANSACTION SNAPSHOT takes no parameter.
        await helper.execute(text(f"SET TRANSACTION SNAPSHOT '{exported}'"))
        await helper.execute(text("SET LOCAL statement_timeout = 0"))
        await helper.execute(text("SET LOCAL jit = off"))
        while pending:
            key = pending.pop()
            started = time.perf_counter()
            rows = await _series_rows(helper, key, covered_from, covered_to)
            await computed.put((key, rows, time.perf_counter() - started))


async def _store_series(session: AsyncSession, key: _Key, rows: list[Any]) -> None:
    indicator_id, period, breakdown = key
    await session.execute(
        text(_INSERT_CELLS_SQL),
        {
            "indicator_id": indicator_id,
            "period": period,
            "breakdown": breakdown or "",
            "positions": list(range(len(rows))),
            "starts": [row.period_start for row in rows],
            "ends": [row.period_end for row in rows],
            "groups": [row.grp for row in rows],
            "seen": [row.seen for row in rows],
            "nums": [row.num for row in rows],
            "dens": [row.den for row in rows],
            "nkeys": [row.nkey for row in rows],
            "dkeys": [row.dkey for row in rows],
            "values": [row.value for row in rows],
        },
    )


async def refresh_periodically(
    factory: async_sessionmaker[AsyncSession],
    interval_s: float,
    stop: asyncio.Event,
    jobs: int = 1,
) -> int:
    """Refresh the rollup whenever it needs it (`needs_refresh`), checking every `interval_s`,
    until `stop` is set; a database error is logged and retried at the next check. Returns how
    many refreshes were made."""
    refreshes = 0
    while not stop.is_set():
        try:
            async with factory() as session, session.begin():
                refreshed = await refresh_rollup(
                    session, only_if_needed=True, helpers=factory, jobs=jobs
                )
            if refreshed is not None:
                refreshes += 1
                logger.info(
                    "indicator rollup refreshed",
                    extra={
                        "cells": refreshed.cells,
                        "seconds": round(refreshed.seconds, 1),
                        "figures_as_of": refreshed.figures_as_of.isoformat(),
                    },
                )
        # A failing helper of a parallel refresh arrives in an ExceptionGroup.
        except (OSError, TimeoutError, SQLAlchemyError, ExceptionGroup) as exc:
            logger.warning(
                "indicator rollup refresh failed; retrying", extra={"error": type(exc).__name__}
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
    return refreshes
