"""Checks and normalisation for the identifiers a child is matched on. Pure functions only."""

from __future__ import annotations

import random
import re
import unicodedata
from typing import Final

_NHS_NUMBER = re.compile(r"[0-9]{10}")
# The last character is a digit for a permanent UPN and a letter for a temporary one.
_UPN = re.compile(r"[A-Za-z][0-9]{11}[0-9A-Za-z]")
_LA_CHILD_ID = re.compile(r"[A-Za-z0-9]{1,20}")

SYNTHETIC_NHS_PREFIX: Final = "999"
"""NHS numbers starting 999 are never issued to patients, so test and demo data uses them."""


def compute_nhs_check_digit(first_nine: str) -> int | None:
    """Modulus-11 check digit for nine digits, or None when no valid check digit exists.

    Weights run 10 down to 2; a remainder giving 11 becomes 0 and one giving 10 means the nine
    digits can never form a valid NHS number.
    """
    if len(first_nine) != 9 or not first_nine.isascii() or not first_nine.isdigit():
        raise ValueError("expected exactly nine ASCII digits")
    total = sum(
        int(digit) * weight for digit, weight in zip(first_nine, range(10, 1, -1), strict=True)
    )
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def is_valid_nhs_number(s: str) -> bool:
    """Whether `s` is ten ASCII digits (no spaces) ending in the modulus-11 check digit."""
    if _NHS_NUMBER.fullmatch(s) is None:
        return False
    return compute_nhs_check_digit(s[:9]) == int(s[9])


def synthetic_nhs_number(rng: random.Random) -> str:
    """A valid NHS number from the 999 range, which is never issued, drawn from `rng`."""
    while True:
        first_nine = SYNTHETIC_NHS_PREFIX + "".join(str(rng.randrange(10)) for _ in range(6))
        check = compute_nhs_check_digit(first_nine)
        if check is not None:
            return first_nine + str(check)


def is_valid_upn(s: str) -> bool:
    """Whether `s` has the shape of a DfE unique pupil number (permanent or temporary)."""
    return _UPN.fullmatch(s) is not None


def is_valid_la_child_id(s: str) -> bool:
    """Whether `s` is a local authority child id: 1 to 20 ASCII letters and digits."""
    return _LA_CHILD_ID.fullmatch(s) is not None


def normalise_family_name(s: str) -> str:
    """The matching key of a family name: case-folded letters with accents, spaces and marks gone.

    "O'Brien-Smith ", "obriensmith" and "Ó Brien Smith" all give "obriensmith". May be empty when
    the name has no letters at all; callers must not match on an empty key.
    """
    decomposed = unicodedata.normalize("NFKD", s.casefold())
    # NFKD splits an accented letter into the base letter and combining marks; marks are not
    # letters, so keeping only letters strips accents as well as punctuation and spaces.
    return "".join(char for char in decomposed if char.isalpha())
