from __future__ import annotations

from datetime import date

import pytest

from service.working_days import add_working_days, bank_holidays, is_working_day

HOLIDAYS_2023_24 = bank_holidays(2023, 2024)


def test_england_bank_holidays_2023_are_the_published_weekday_ones() -> None:
    assert bank_holidays(2023, 2023) == [
        date(2023, 1, 2),  # New Year's Day substitute: 1 January was a Sunday
        date(2023, 4, 7),
        date(2023, 4, 10),
        date(2023, 5, 1),
        date(2023, 5, 8),  # Coronation of King Charles III
        date(2023, 5, 29),
        date(2023, 8, 28),
        date(2023, 12, 25),
        date(2023, 12, 26),
    ]


def test_bank_holidays_leave_out_weekend_days() -> None:
    assert all(day.weekday() < 5 for day in bank_holidays(2020, 2030))


def test_bank_holidays_refuse_a_reversed_range() -> None:
    with pytest.raises(ValueError, match="first_year"):
        bank_holidays(2024, 2023)


def test_fifteen_working_days_across_christmas_skip_25_26_december_and_1_january() -> None:
    # 21, 22, 27, 28, 29 Dec; 2-5 Jan; 8-12 Jan; 15 Jan is the 15th.
    assert add_working_days(date(2023, 12, 20), 15, HOLIDAYS_2023_24) == date(2024, 1, 15)


def test_fifteen_working_days_across_easter_skip_good_friday_and_easter_monday() -> None:
    # 4-6 Apr; 11-14 Apr; 17-21 Apr; 24-26 Apr: the 15th is Wednesday 26 April.
    assert add_working_days(date(2023, 4, 3), 15, HOLIDAYS_2023_24) == date(2023, 4, 26)


def test_fifteen_working_days_without_holidays_skip_only_weekends() -> None:
    assert add_working_days(date(2023, 4, 3), 15, []) == date(2023, 4, 24)


def test_zero_working_days_is_the_start_itself() -> None:
    assert add_working_days(date(2023, 12, 25), 0, HOLIDAYS_2023_24) == date(2023, 12, 25)


def test_one_working_day_after_a_saturday_is_monday() -> None:
    assert add_working_days(date(2023, 6, 3), 1, HOLIDAYS_2023_24) == date(2023, 6, 5)


def test_one_working_day_after_friday_before_easter_monday_is_tuesday() -> None:
    assert add_working_days(date(2023, 4, 6), 1, HOLIDAYS_2023_24) == date(2023, 4, 11)


def test_negative_working_days_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        add_working_days(date(2023, 4, 3), -1, HOLIDAYS_2023_24)


def test_boxing_day_is_not_a_working_day() -> None:
    assert not is_working_day(date(2023, 12, 26), HOLIDAYS_2023_24)
