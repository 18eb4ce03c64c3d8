"""Working days in England and Wales, for statutory timescales such as ICPC within 15 working days.

Pure functions: bank holidays come from the `holidays` package, which needs no network.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, timedelta

from holidays import country_holidays

# England and Wales share the same bank holidays; the `holidays` package files them under "ENG".
_SUBDIVISION = "ENG"
_SATURDAY = 5


def is_working_day(day: date, holidays: Collection[date]) -> bool:
    """Whether `day` is Monday to Friday and not one of `holidays`."""
    return day.weekday() < _SATURDAY and day not in holidays


def bank_holidays(first_year: int, last_year: int) -> list[date]:
    """England and Wales bank holidays that fall on weekdays, from `first_year` to `last_year`.

    Only weekdays are returned (a Christmas Day on a Saturday is replaced by its substitute
    Monday, which is listed), so "weekdays in a range minus holidays in that range" counts
    working days without subtracting any day twice. Sorted ascending; the SQL indicators receive
    this list as a `date[]` parameter.
    """
    if first_year > last_year:
        raise ValueError("first_year must not be after last_year")
    calendar = country_holidays("GB", subdiv=_SUBDIVISION, years=range(first_year, last_year + 1))
    return sorted(day for day in calendar if day.weekday() < _SATURDAY)


def add_working_days(start: date, n: int, holidays: Collection[date]) -> date:
    """The date `n` working days after `start`; `n == 0` gives `start` itself.

    Working days are Monday to Friday except `holidays`. `start` need not be a working day: 1
    working day after a Saturday is the following Monday (or the next working day after it).
    """
    if n < 0:
        raise ValueError("n must not be negative")
    # A set makes each membership test O(1) whatever collection the caller passed.
    days_off = holidays if isinstance(holidays, (set, frozenset)) else frozenset(holidays)
    day = start
    remaining = n
    while remaining:
        day += timedelta(days=1)
        if is_working_day(day, days_off):
            remaining -= 1
    return day
