"""Calendar arithmetic for indicator series. Pure functions only.

Every bucket is half-open, `[start, end)`, so SQL compares `start <= day AND day < end` with no
end-of-day fiddling. Buckets are whole calendar units: a range starting mid-month still gets the
whole first month, because a part-month figure would not be comparable with its neighbours.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Final

from schemas.indicators import PERIODS, Period

Bucket = tuple[date, date, str]
"""(start, end, label): the days `start <= day < end`, labelled for display."""

# The first day after a bucket must still be a representable date.
_LATEST_END: Final = date(9998, 12, 31)
EARLIEST_START: Final = date(2, 1, 1)
"""No bucket may start on 0001-01-01 (a financial year from this date starts on 0001-04-01): the
driver sends the first representable date as -infinity, which the series SQL cannot step from."""


def _add_months(first_of_month: date, months: int) -> date:
    index = first_of_month.year * 12 + first_of_month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _floor(day: date, period: Period) -> date:
    """The first day of the bucket of `period` that holds `day`."""
    if period in ("month", "snapshot"):
        return day.replace(day=1)
    if period == "quarter":
        return date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    if period == "year":
        return date(day.year, 1, 1)
    # The English financial year runs from 1 April to 31 March.
    return date(day.year if day.month >= 4 else day.year - 1, 4, 1)


def _months_in(period: Period) -> int:
    return {"month": 1, "snapshot": 1, "quarter": 3, "year": 12, "financial_year": 12}[period]


def _label(start: date, period: Period) -> str:
    if period == "month":
        return f"{start.year:04d}-{start.month:02d}"
    if period == "quarter":
        return f"{start.year:04d}-Q{(start.month - 1) // 3 + 1}"
    if period == "year":
        return f"{start.year:04d}"
    if period == "financial_year":
        return f"{start.year:04d}-{(start.year + 1) % 100:02d}"
    return start.isoformat()


def period_bounds(start: date, end: date, period: Period) -> list[Bucket]:
    """The calendar buckets of `period` that cover every day from `start` to `end`, both included.

    Labels: month "2023-04", quarter "2023-Q2" (calendar quarters, Q2 is April-June), year "2023",
    financial_year "2023-24" (1 April 2023 to 31 March 2024).

    `snapshot` is for point-in-time counts: one bucket per month the range touches, holding only
    that month's last day and labelled with it ("2023-04-30"). For every period the point in time
    an open-at-period-end indicator counts is the bucket's last day, `end - 1 day`.

    Raises ValueError when `start` is after `end`, before year 2, or the range runs past year 9998.
    """
    if start > end:
        raise ValueError("start must be on or before end")
    if start < EARLIEST_START:
        raise ValueError(f"start must be on or after {EARLIEST_START.isoformat()}")
    if end > _LATEST_END:
        raise ValueError(f"end must be on or before {_LATEST_END.isoformat()}")
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    step = _months_in(period)
    buckets: list[Bucket] = []
    bucket_start = _floor(start, period)
    while bucket_start <= end:
        bucket_end = _add_months(bucket_start, step)
        if period == "snapshot":
            month_end = bucket_end - timedelta(days=1)
            buckets.append((month_end, bucket_end, _label(month_end, period)))
        else:
            buckets.append((bucket_start, bucket_end, _label(bucket_start, period)))
        bucket_start = bucket_end
    return buckets
