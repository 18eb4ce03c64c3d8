"""The cell-key perturbation table and functions (`service/indicators/perturbation.py`)."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from itertools import product

import pytest

from service.indicators.catalogue import load_disclosure_control, load_perturbation_table
from service.indicators.perturbation import (
    PerturbationRow,
    PerturbationTable,
    perturb_count,
    perturb_figures,
)
from tests.builders.disclosure import STATED_TABLE, stated_noise

TABLE = load_perturbation_table()


def test_the_catalogue_publishes_the_stated_table() -> None:
    published = {
        count: tuple(
            (row.first_key, row.last_key, row.noise)
            for row in load_disclosure_control().perturbation_table
            if row.count == count
        )
        for count in {row.count for row in load_disclosure_control().perturbation_table}
    }

    assert published == STATED_TABLE


@pytest.mark.parametrize("count", [6, 7, 8, 9, 13, 25, 100, 1124, 10**6])
def test_every_key_gets_the_stated_noise_and_no_count_drops_below_six(count: int) -> None:
    noises = [TABLE.noise(count, key) for key in range(256)]

    assert noises == [stated_noise(count, key) for key in range(256)]
    assert min(noises) >= -2
    assert max(noises) <= 2
    assert all(count + noise >= 6 for noise in noises)


def test_the_noise_averages_zero_from_eight_up() -> None:
    assert sum(TABLE.noise(8, key) for key in range(256)) == 0
    assert sum(TABLE.noise(500, key) for key in range(256)) == 0


def test_a_cell_key_is_the_key_sum_modulo_256() -> None:
    assert TABLE.noise(20, 7) == TABLE.noise(20, 7 + 256 * 41)


def test_zero_is_never_perturbed_and_a_small_count_is_never_looked_up() -> None:
    assert perturb_count(TABLE, 0, 123) == 0
    with pytest.raises(ValueError, match="hidden"):
        perturb_count(TABLE, 3, 0)


def test_a_rate_whose_numerator_is_its_denominator_stays_whole() -> None:
    # The same records make the same cell key, hence the same noise.
    for key in range(256):
        figures = perturb_figures(TABLE, "percent", 12, 12, key, key)
        assert figures.numerator == figures.denominator
        assert figures.value == 100.0


def test_a_rate_never_shows_a_numerator_above_its_denominator() -> None:
    # 10 of 11: keys giving the numerator +2 and the denominator -2.
    figures = perturb_figures(TABLE, "percent", 10, 11, 255, 0)

    assert (figures.numerator, figures.denominator, figures.value) == (9, 9, 100.0)


def test_a_mean_perturbs_its_sum_and_its_count_with_the_count_key() -> None:
    figures = perturb_figures(TABLE, "mean", 40, 8, 0, 250)

    assert (figures.numerator, figures.denominator, figures.value) == (42, 10, 4.2)


@pytest.mark.parametrize("unit", ["percent", "mean"])
def test_values_round_half_away_from_zero_as_decimal_does(unit: str) -> None:
    """The value is computed in whole numbers; it equals Decimal's half-up quantize of the exact
    quotient, sign of a zero included (a mean of grade changes can be negative)."""
    scale, places = (100, Decimal("0.1")) if unit == "percent" else (1, Decimal("0.01"))
    # A percent's numerator is a count (shown from 6; 1 to 5 are hidden before), a mean's a sum.
    numerators = range(-80, 81) if unit == "mean" else [0, *range(6, 81)]
    negative_zeros = 0
    for numerator, denominator in product(numerators, range(6, 250)):
        figures = perturb_figures(TABLE, unit, numerator, denominator, 0, 0)
        assert figures.numerator is not None
        assert figures.denominator
        exact = Decimal(figures.numerator * scale) / Decimal(figures.denominator)
        expected = float(exact.quantize(places, rounding=ROUND_HALF_UP))
        assert figures.value == expected
        assert math.copysign(1, figures.value) == math.copysign(1, expected)
        negative_zeros += figures.value == 0 and math.copysign(1, figures.value) < 0

    assert negative_zeros > 0 if unit == "mean" else negative_zeros == 0


def test_a_quarter_minus_its_months_lands_on_the_hidden_count_less_than_one_time_in_five() -> None:
    """With independent cell keys, the chance that the noises of a quarter and its two shown
    months cancel, so that the attacker's subtraction happens to be exact (which the attacker
    cannot tell from any other outcome)."""
    distribution = {
        noise: Fraction(sum(1 for key in range(256) if TABLE.noise(25, key) == noise), 256)
        for noise in range(-2, 3)
    }
    exact = sum(
        distribution[quarter] * distribution[first] * distribution[second]
        for quarter, first, second in product(distribution, repeat=3)
        if quarter == first + second
    )

    assert exact == Fraction(23, 128)


def rows(*spec: tuple[int, int, int, int]) -> list[PerturbationRow]:
    return [PerturbationRow(*values) for values in spec]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([(6, 0, 100, 0)], "no noise for key 101"),
        ([(6, 0, 255, 0), (6, 255, 255, 1)], "given twice"),
        ([(6, 0, 255, -1)], "below 6"),
        ([(6, 0, 255, 0), (8, 0, 255, 0)], "every count"),
        ([(6, 0, 256, 0)], "within"),
    ],
)
def test_an_incomplete_or_unsafe_table_is_refused(
    spec: list[tuple[int, int, int, int]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PerturbationTable(rows(*spec))
