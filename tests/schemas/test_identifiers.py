"""Identifier checks and family-name normalisation used for matching children."""

from __future__ import annotations

import random

import pytest

from schemas.identifiers import (
    compute_nhs_check_digit,
    is_valid_la_child_id,
    is_valid_nhs_number,
    is_valid_upn,
    normalise_family_name,
    synthetic_nhs_number,
)


def test_nhs_number_with_correct_check_digit_is_valid() -> None:
    # Weighted sum of 943476591 is 299; 11 - 299 % 11 = 9.
    assert is_valid_nhs_number("9434765919")


def test_nhs_number_with_wrong_check_digit_is_invalid() -> None:
    assert not is_valid_nhs_number("9434765918")


def test_nhs_number_whose_remainder_gives_eleven_needs_check_digit_zero() -> None:
    # Weighted sum of 999000005 is 253 = 23 * 11, so 11 - 0 = 11, which becomes 0.
    assert is_valid_nhs_number("9990000050")


def test_nhs_number_whose_remainder_gives_eleven_is_invalid_with_check_digit_one() -> None:
    # Catches an implementation that turns 11 into 11 % 10 instead of 0.
    assert not is_valid_nhs_number("9990000051")


@pytest.mark.parametrize("last_digit", range(10))
def test_nhs_number_whose_check_digit_would_be_ten_is_always_invalid(last_digit: int) -> None:
    # Weighted sum of 999000000 is 243; 11 - 243 % 11 = 10, so no check digit can make it valid.
    assert not is_valid_nhs_number(f"999000000{last_digit}")


def test_check_digit_of_nine_digits_giving_ten_is_none() -> None:
    assert compute_nhs_check_digit("999000000") is None


def test_check_digit_refuses_anything_but_nine_digits() -> None:
    with pytest.raises(ValueError, match="nine"):
        compute_nhs_check_digit("99900000")


@pytest.mark.parametrize(
    "candidate",
    ["943476591", "94347659190", "943 476 5919", "943476591X", "", "٩٤٣٤٧٦٥٩١٩", " 9434765919"],
)
def test_nhs_number_must_be_exactly_ten_ascii_digits(candidate: str) -> None:
    assert not is_valid_nhs_number(candidate)


def test_synthetic_nhs_numbers_are_valid_and_in_the_999_range() -> None:
    rng = random.Random(20240401)
    numbers = [synthetic_nhs_number(rng) for _ in range(2000)]
    assert all(number.startswith("999") and is_valid_nhs_number(number) for number in numbers)


def test_synthetic_nhs_numbers_depend_only_on_the_seed() -> None:
    first = [synthetic_nhs_number(random.Random(7)) for _ in range(3)]
    assert first == [synthetic_nhs_number(random.Random(7))] * 3


def test_synthetic_nhs_numbers_vary() -> None:
    rng = random.Random(1)
    assert len({synthetic_nhs_number(rng) for _ in range(50)}) > 40


@pytest.mark.parametrize(
    "upn", ["A123456789012", "z123456789012", "A12345678901B", "a12345678901b"]
)
def test_upn_of_either_shape_is_valid(upn: str) -> None:
    assert is_valid_upn(upn)


@pytest.mark.parametrize(
    "upn",
    ["1123456789012", "A12345678901", "A1234567890123", "AB23456789012", "A1234567890-2", ""],
)
def test_upn_of_another_shape_is_invalid(upn: str) -> None:
    assert not is_valid_upn(upn)


@pytest.mark.parametrize("la_child_id", ["1", "LA000123", "a" * 20, "Ab12Cd34"])
def test_la_child_id_of_one_to_twenty_alphanumerics_is_valid(la_child_id: str) -> None:
    assert is_valid_la_child_id(la_child_id)


@pytest.mark.parametrize("la_child_id", ["", "a" * 21, "LA-0001", "LA 0001", "LÄ0001"])
def test_la_child_id_empty_long_or_with_other_characters_is_invalid(la_child_id: str) -> None:
    assert not is_valid_la_child_id(la_child_id)


def test_family_name_normalisation_ignores_case_punctuation_and_spaces() -> None:
    assert normalise_family_name("O'Brien-Smith ") == normalise_family_name("obriensmith")


def test_family_name_normalisation_strips_accents() -> None:
    assert normalise_family_name("Ó Bríen Smíth") == "obriensmith"


def test_family_name_normalisation_case_folds_beyond_lower_case() -> None:
    assert normalise_family_name("Strauß") == normalise_family_name("STRAUSS")


def test_family_name_normalisation_keeps_non_latin_letters() -> None:
    assert normalise_family_name("Ковальчук") == "ковальчук"


def test_family_name_without_letters_normalises_to_empty() -> None:
    assert normalise_family_name(" -' 123") == ""
