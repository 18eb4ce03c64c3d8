"""The vocabulary of the DfE's open-data standard (Explore Education Statistics), which English
statistics teams already read: how a period is written as `time_period` and `time_identifier`,
which columns name the area at each `geographic_level`, and the symbols that stand in for a
figure. The CSV (api/indicators.py) and the OData feed (TimePeriod, TimeIdentifier) both use it.

Source: the DfE analysts' guide, "Open data standards" (time and geography columns, allowable
time identifiers, data symbols), and its data screener's list of acceptable time identifiers.
"""

from __future__ import annotations

from datetime import date
from typing import Final, Literal

from schemas.indicators import Period

OpenDataLevel = Literal[
    "National",
    "Regional",
    "Local authority",
    "Local authority district",
    "English devolved area",
]

COUNTRY_CODE: Final = "E92000001"
COUNTRY_NAME: Final = "England"

AREA_COLUMNS: Final[dict[OpenDataLevel, tuple[str, ...]]] = {
    "National": (),
    "Regional": ("region_code", "region_name"),
    "Local authority": ("old_la_code", "new_la_code", "la_name"),
    "Local authority district": ("lad_code", "lad_name"),
    "English devolved area": ("english_devolved_area_code", "english_devolved_area_name"),
}
"""The columns each level requires after `country_code` and `country_name`, codes before names."""

SUPPRESSED: Final = "c"
"""A figure withheld by disclosure control ("confidential")."""
NOT_APPLICABLE: Final = "z"
"""No figure can exist: a rate or mean whose denominator is 0."""
TOTAL: Final = "Total"
"""The entry of a filter column on an aggregate row."""

_MONTHS: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def time_period(period: Period, period_start: date, period_end: date) -> int:
    """`time_period`: the four-digit year, or for a financial year the six digits of its two
    consecutive years (202324 for April 2023 to March 2024). A snapshot is dated by its day."""
    if period == "financial_year":
        return period_start.year * 100 + (period_start.year + 1) % 100
    if period == "snapshot":
        return period_end.year
    return period_start.year


def time_identifier(period: Period, period_start: date, period_end: date) -> str:
    """`time_identifier`: "January".."December" for a month (a snapshot counts the last day of a
    month, so it is named by that month), "Calendar year Q1".."Q4", "Calendar year" or
    "Financial year"."""
    if period == "month":
        return _MONTHS[period_start.month - 1]
    if period == "snapshot":
        return _MONTHS[period_end.month - 1]
    if period == "quarter":
        return f"Calendar year Q{(period_start.month - 1) // 3 + 1}"
    if period == "year":
        return "Calendar year"
    return "Financial year"
