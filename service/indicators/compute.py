"""Computing an indicator series: check the request against the catalogue, run the indicator's one
SQL statement (see `sql.py`), then apply disclosure control to the aggregates it returns.

Disclosure control, for callers without `indicators:read:unsuppressed` (SPEC 2.5; the catalogue's
`disclosure_control` says it in words):
1. Suppression (`suppression.py`), on the exact counts: counts of 1 to 5 and rates built on them
   are hidden, and inside a breakdown a second cell is hidden whenever a lone hidden cell could be
   recovered from the period's total. For a mean, the numerator is a sum of ratings or grade
   changes rather than a count of children, so only the denominator (the number of things
   averaged) decides. Disability's code cells are parts of its `any` cell, so they are checked
   against that cell rather than the total.
2. Perturbation (`perturbation.py`), of every count still shown, by the cell-key method: each
   cell's noise comes from the published table and the keys of the records in it, so it is the
   same every time and subtraction across queries gives no exact count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from typing import Any, Final, Literal, NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.indicators import Breakdown, Period
from service.errors import NotFound, Unprocessable, field_problem
from service.indicators.catalogue import IndicatorMeta, load_catalogue, load_perturbation_table
from service.indicators.periods import EARLIEST_START, Bucket, period_bounds
from service.indicators.perturbation import perturb_figures
from service.indicators.rollup import (
    RollupState,
    RollupUnavailable,
    Source,
    covers,
    read_cells,
    read_rollup_state,
)
from service.indicators.sql import (
    FIXED_GROUPS,
    SUBGROUPS_OF,
    build_series_sql,
    series_parameters,
)
from service.indicators.suppression import Cell, apply_primary_suppression, suppress

MAX_BUCKETS: Final = 400
"""More than 33 years of months: enough for any real question, small enough to answer fast."""
_ONE_DAY: Final = timedelta(days=1)
_ROW_COLUMNS: Final = ("period_start", "period_end", "grp", "num", "den", "nkey", "dkey", "value")
"""The columns `_publish` reads, by name: the live statement's rows have one more (`seen`)."""
_Row = list[Any]
"""A row's columns after the period's: grp, num, den, nkey, dkey, value."""


class IndicatorParameterInvalid(Unprocessable):
    """A query parameter the indicator does not offer (a period, a breakdown) or a bad range."""

    problem = "invalid-indicator-parameter"
    title = "The indicator cannot be computed with these parameters"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, [field_problem(f"query.{field}", message, "invalid")])


class SeriesPoint(NamedTuple):
    """One published figure. `period_end` is the bucket's last day (inclusive); `group` is the
    breakdown group, None without a breakdown. A named tuple: the cheapest immutable record to
    build, and a series builds one per point."""

    period_start: date
    period_end: date
    label: str
    group: str | None
    numerator: int | None
    denominator: int | None
    value: int | float | None
    suppressed: bool


@dataclass(frozen=True, slots=True)
class IndicatorSeries:
    indicator: IndicatorMeta
    period: Period
    breakdown: Breakdown | None
    suppression_applied: bool
    points: list[SeriesPoint]
    served_from: Literal["live", "rollup"] = "live"
    figures_as_of: datetime | None = None
    """When the figures were computed, if they may be older than the data (served from a rollup
    that writes have overtaken since); None when they are the data's figures now."""


def get_indicator(indicator_id: str) -> IndicatorMeta:
    """The catalogue entry, or NotFound."""
    meta = load_catalogue().get(indicator_id)
    if meta is None:
        raise NotFound("no indicator with this id; GET /v1/indicators lists them")
    return meta


def _check_request(
    meta: IndicatorMeta, start: date, end: date, period: Period, breakdown: Breakdown | None
) -> list[Bucket]:
    if period not in meta.periods:
        offered = ", ".join(meta.periods)
        raise IndicatorParameterInvalid("period", f"this indicator offers the periods {offered}")
    if breakdown is not None and breakdown not in meta.breakdowns:
        offered = ", ".join(meta.breakdowns) or "none"
        raise IndicatorParameterInvalid(
            "breakdown", f"this indicator offers the breakdowns {offered}"
        )
    for name, day in (("to", end), ("from", start)):
        if day < EARLIEST_START:
            raise IndicatorParameterInvalid(
                name, f"{name} must be on or after {EARLIEST_START.isoformat()}"
            )
    if start > end:
        raise IndicatorParameterInvalid("from", "from must be on or before to")
    try:
        buckets = period_bounds(start, end, period)
    except ValueError as error:
        raise IndicatorParameterInvalid("to", str(error)) from error
    if len(buckets) > MAX_BUCKETS:
        raise IndicatorParameterInvalid(
            "from", f"the range holds {len(buckets)} periods; ask for at most {MAX_BUCKETS}"
        )
    return buckets


def _number(raw: object, integral: bool) -> int | float | None:
    if not isinstance(raw, Decimal | float | int):
        return None
    return int(raw) if integral else float(raw)


async def compute_series(
    session: AsyncSession,
    meta: IndicatorMeta,
    *,
    start: date,
    end: date,
    period: Period,
    breakdown: Breakdown | None,
    unsuppressed: bool,
    max_staleness_s: float = 0.0,
    source: Source = "auto",
) -> IndicatorSeries:
    """The indicator's series over the buckets of `period` covering `start`..`end` (inclusive).

    Its cells come from the rollup (`rollup.py`) when it covers the range and is current, or
    not current but computed at most `max_staleness_s` ago (the series then says when, in
    `figures_as_of`); otherwise from the live statement. `source` forces one: "live", or
    "rollup" (served whatever its age; RollupUnavailable when it does not cover the range).

    Raises IndicatorParameterInvalid when the indicator does not offer the period or breakdown,
    or the range is empty or too long.
    """
    buckets = _check_request(meta, start, end, period, breakdown)
    labels = {bucket_start: label for bucket_start, _, label in buckets}
    rows: list[Any] | None = None
    state_used: RollupState | None = None
    figures_as_of: datetime | None = None
    if source != "live":
        state = await read_rollup_state(session)
        if (
            state is not None
            and covers(state, period, buckets)
            and (source == "rollup" or state.current or state.age_s <= max_staleness_s)
        ):
            rows = await read_cells(session, meta.id, period, breakdown, buckets)
            state_used = state
            figures_as_of = None if state.current else state.figures_as_of
        elif source == "rollup":
            raise RollupUnavailable("the rollup does not cover this series; refresh it")
    if rows is None:
        # The periods x groups cross join makes the planner's cost estimates huge, which would
        # switch on JIT compilation: seconds of compiling for a query that runs in well under one.
        await session.execute(text("SET LOCAL jit = off"))
        statement = text(build_series_sql(meta.id, meta.unit, period, breakdown))
        params = series_parameters(meta.id, period, breakdown, [(b[0], b[1]) for b in buckets])
        rows = list((await session.execute(statement, params)).all())

    points = _publish(rows, meta.unit, breakdown, labels, unsuppressed)
    return IndicatorSeries(
        indicator=meta,
        period=period,
        breakdown=breakdown,
        suppression_applied=not unsuppressed,
        points=points,
        served_from="live" if state_used is None else "rollup",
        figures_as_of=figures_as_of,
    )


def _without_sum(cell: Cell) -> Cell:
    """A mean's cell as disclosure control sees it: only the number averaged is a count."""
    return Cell(cell.label, cell.group, None, cell.denominator, cell.value, cell.suppressed)


def _suppress_breakdown(cells: list[Cell], total: Cell, breakdown: Breakdown) -> list[Cell]:
    parent = SUBGROUPS_OF.get(breakdown)
    if parent is None:
        return suppress(cells, total)
    # The fixed groups partition the total; every other cell is a part of the parent cell.
    whole = [index for index, cell in enumerate(cells) if cell.label in FIXED_GROUPS[breakdown]]
    parts = [index for index in range(len(cells)) if index not in whole]
    result = list(cells)
    for index, cell in zip(whole, suppress([cells[i] for i in whole], total), strict=True):
        result[index] = cell
    parent_cell = next((result[i] for i in whole if result[i].label == parent), None)
    for index, cell in zip(parts, suppress([cells[i] for i in parts], parent_cell), strict=True):
        result[index] = cell
    return result


def _disclose(
    cells: list[Cell], total: Cell, is_mean: bool, breakdown: Breakdown | None
) -> list[Cell]:
    checked = [_without_sum(cell) for cell in cells] if is_mean else cells
    checked_total = _without_sum(total) if is_mean else total
    if breakdown is not None:
        result = _suppress_breakdown(checked, checked_total, breakdown)
    else:
        result = [apply_primary_suppression(cell) for cell in checked]
    # Put a mean's sum back wherever the cell is still shown.
    return [
        original if not outcome.suppressed else outcome
        for original, outcome in zip(cells, result, strict=True)
    ]


def _publish(
    rows: list[Any],
    unit: str,
    breakdown: Breakdown | None,
    labels: dict[date, str],
    unsuppressed: bool,
) -> list[SeriesPoint]:
    """The points of a series from the rows of its statement (or of the rollup): per period, in
    the order the periods came, its total without a breakdown, or its groups' cells in their
    order with one; disclosure control applied unless `unsuppressed`."""
    if not rows:
        return []
    # Plain tuples: a point reads its row's columns several times, and a Row's attributes cost
    # a lookup by name each time.
    columns = itemgetter(*(rows[0]._fields.index(name) for name in _ROW_COLUMNS))
    is_count = unit == "count"
    ends: dict[date, date] = {}
    totals: dict[date, _Row] = {}
    groups: dict[date, list[_Row]] = {}
    for period_start, period_end, *cell in map(columns, rows):
        ends[period_start] = period_end
        if cell[0] is None:
            totals[period_start] = cell
        else:
            groups.setdefault(period_start, []).append(cell)

    table = load_perturbation_table()
    points: list[SeriesPoint] = []
    add = points.append
    for period_start, period_end in ends.items():
        total = totals[period_start]
        label = labels[period_start]
        last_day = period_end - _ONE_DAY
        published = groups.get(period_start, []) if breakdown is not None else [total]
        if unsuppressed:
            for group, num, den, _, _, value in published:
                add(
                    SeriesPoint(
                        period_start,
                        last_day,
                        label,
                        group,
                        int(num),
                        None if is_count else int(den),
                        _number(value, integral=is_count),
                        False,
                    )
                )
            continue
        cells = [_cell(row, label, is_count) for row in published]
        disclosed = _disclose(cells, _cell(total, label, is_count), unit == "mean", breakdown)
        for (group, num, _, nkey, dkey, _), cell in zip(published, disclosed, strict=True):
            if cell.suppressed:
                add(SeriesPoint(period_start, last_day, label, group, None, None, None, True))
                continue
            figures = perturb_figures(table, unit, int(num), cell.denominator, int(nkey), int(dkey))
            add(
                SeriesPoint(
                    period_start,
                    last_day,
                    label,
                    group,
                    figures.numerator,
                    figures.denominator,
                    figures.value,
                    False,
                )
            )
    return points


def _cell(row: _Row, period_label: str, is_count: bool) -> Cell:
    """A row as disclosure control sees it: its group's cell (or the total) among the cells of
    its period. Without the value: a shown figure's value is recomputed from the perturbed
    counts, a hidden one has none."""
    group, num, den = row[0], row[1], row[2]
    return Cell(
        group if group is not None else "total",
        period_label,
        int(num),
        None if is_count else int(den),
        None,
    )
