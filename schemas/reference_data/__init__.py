"""DfE Children in Need census code lists, kept as data keyed by census year.

The lists live in `cin_codes.yaml` next to this module. Codes change between census years, so every
lookup names the year, defaulting to the one the service currently validates against.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any, Final

import yaml

REFERRAL_SOURCE: Final = "referral_source"
CATEGORY_OF_ABUSE: Final = "category_of_abuse"
ETHNICITY: Final = "ethnicity"
DISABILITY: Final = "disability"

CODE_LIST_NAMES: Final[tuple[str, ...]] = (
    REFERRAL_SOURCE,
    CATEGORY_OF_ABUSE,
    ETHNICITY,
    DISABILITY,
)


class UnknownCodeListError(LookupError):
    """Raised when a code list or census year is not in the reference data."""


def _require_str_mapping(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{where}: expected a non-empty mapping")
    for code, label in value.items():
        if not isinstance(code, str) or not isinstance(label, str):
            raise ValueError(f"{where}: code {code!r} and its label must both be strings")
    return dict(value)


@functools.cache
def _load() -> tuple[str, dict[str, dict[str, dict[str, str]]]]:
    """Parse and check the YAML once; a malformed file fails at import, not mid-request."""
    text = resources.files(__name__).joinpath("cin_codes.yaml").read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    current = document.get("current_census_year")
    raw_years = document.get("census_years")
    if not isinstance(raw_years, dict):
        raise ValueError("cin_codes.yaml: census_years must be a mapping")
    years: dict[str, dict[str, dict[str, str]]] = {}
    for year, lists in raw_years.items():
        if not isinstance(year, str) or not isinstance(lists, dict):
            raise ValueError(f"cin_codes.yaml: census year {year!r} must be a quoted string")
        missing = set(CODE_LIST_NAMES) - set(lists)
        if missing:
            raise ValueError(f"cin_codes.yaml: {year} lacks {sorted(missing)}")
        years[year] = {
            name: _require_str_mapping(codes, f"cin_codes.yaml: {year}.{name}")
            for name, codes in lists.items()
        }
    if current not in years:
        raise ValueError(f"cin_codes.yaml: current_census_year {current!r} has no code lists")
    return current, years


CURRENT_CENSUS_YEAR: Final[str] = _load()[0]
"""The census year whose codes incoming requests are validated against."""


def census_years() -> tuple[str, ...]:
    """Every census year the reference data holds, in file order."""
    return tuple(_load()[1])


def _codes(name: str, census_year: str) -> dict[str, str]:
    years = _load()[1]
    if census_year not in years:
        raise UnknownCodeListError(f"no CIN code lists for census year {census_year!r}")
    lists = years[census_year]
    if name not in lists:
        raise UnknownCodeListError(f"no CIN code list {name!r} for census year {census_year}")
    return lists[name]


def code_list(name: str, census_year: str = CURRENT_CENSUS_YEAR) -> dict[str, str]:
    """Return the code -> label mapping of one code list for one census year.

    The result is a fresh copy, so callers may change it without corrupting the cache.
    Raises UnknownCodeListError for an unknown list name or census year.
    """
    return dict(_codes(name, census_year))


def is_code(name: str, code: str, census_year: str = CURRENT_CENSUS_YEAR) -> bool:
    """Whether `code` is in the named code list; raises UnknownCodeListError like `code_list`."""
    return code in _codes(name, census_year)
