from __future__ import annotations

import itertools
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.indicators import PERIODS, Period
from service.indicators.periods import period_bounds


def bucket_holding(day: date, period: Period) -> tuple[date, date, str]:
    (bucket,) = period_bounds(day, day, period)
    return bucket


def test_31_march_2023_belongs_to_financial_year_2022_23() -> None:
    assert bucket_holding(date(2023, 3, 31), "financial_year") == (
        date(2022, 4, 1),
        date(2023, 4, 1),
        "2022-23",
    )


def test_1_april_2023_starts_financial_year_2023_24() -> None:
    assert bucket_holding(date(2023, 4, 1), "financial_year") == (
        date(2023, 4, 1),
        date(2024, 4, 1),
        "2023-24",
    )


def test_financial_year_across_the_century_is_labelled_with_two_digits() -> None:
    assert bucket_holding(date(1999, 12, 1), "financial_year")[2] == "1999-00"


def test_range_spanning_31_march_gives_two_financial_years() -> None:
    labels = [
        label
        for _, _, label in period_bounds(date(2023, 3, 31), date(2023, 4, 1), "financial_year")
    ]

    assert labels == ["2022-23", "2023-24"]


def test_quarters_are_calendar_quarters() -> None:
    assert period_bounds(date(2023, 2, 15), date(2023, 7, 1), "quarter") == [
        (date(2023, 1, 1), date(2023, 4, 1), "2023-Q1"),
        (date(2023, 4, 1), date(2023, 7, 1), "2023-Q2"),
        (date(2023, 7, 1), date(2023, 10, 1), "2023-Q3"),
    ]


def test_months_cover_whole_months_across_a_year_end() -> None:
    assert period_bounds(date(2023, 12, 15), date(2024, 1, 10), "month") == [
        (date(2023, 12, 1), date(2024, 1, 1), "2023-12"),
        (date(2024, 1, 1), date(2024, 2, 1), "2024-01"),
    ]


def test_year_buckets_are_calendar_years() -> None:
    assert period_bounds(date(2022, 6, 1), date(2023, 1, 1), "year") == [
        (date(2022, 1, 1), date(2023, 1, 1), "2022"),
        (date(2023, 1, 1), date(2024, 1, 1), "2023"),
    ]


def test_snapshots_are_month_ends_labelled_by_date() -> None:
    assert period_bounds(date(2024, 1, 15), date(2024, 3, 1), "snapshot") == [
        (date(2024, 1, 31), date(2024, 2, 1), "2024-01-31"),
        (date(2024, 2, 29), date(2024, 3, 1), "2024-02-29"),
        (date(2024, 3, 31), date(2024, 4, 1), "2024-03-31"),
    ]


def test_start_after_end_is_refused() -> None:
    with pytest.raises(ValueError, match="start"):
        period_bounds(date(2024, 1, 2), date(2024, 1, 1), "month")


def test_range_ending_in_the_last_representable_year_is_refused() -> None:
    with pytest.raises(ValueError, match="end"):
        period_bounds(date(9999, 1, 1), date(9999, 12, 31), "month")


def test_range_starting_in_the_first_representable_year_is_refused() -> None:
    with pytest.raises(ValueError, match="start"):
        period_bounds(date(1, 12, 1), date(2, 1, 31), "month")


@pytest.mark.parametrize("period", PERIODS)
def test_the_earliest_start_gives_buckets_after_the_first_date(period: Period) -> None:
    buckets = period_bounds(date(2, 1, 1), date(2, 1, 1), period)
    assert buckets[0][0] > date.min


@given(
    start=st.dates(min_value=date(1990, 1, 1), max_value=date(2060, 1, 1)),
    length=st.integers(min_value=0, max_value=800),
    period=st.sampled_from([period for period in PERIODS if period != "snapshot"]),
)
def test_buckets_are_contiguous_and_cover_the_range(
    start: date, length: int, period: Period
) -> None:
    end = start + timedelta(days=length)

    buckets = period_bounds(start, end, period)

    assert buckets[0][0] <= start
    assert end < buckets[-1][1]
    assert all(earlier[1] == later[0] for earlier, later in itertools.pairwise(buckets))
    assert len({label for _, _, label in buckets}) == len(buckets)
