"""Vocabulary shared by referrals, toolkits, assessments and case events (SPEC section 1 and 5).

Fixed vocabularies are StrEnums so that the OpenAPI document lists their values. CIN census code
lists change between census years, so they are data in `schemas.reference_data`; the annotated
types below validate against the current census year and publish its codes as the JSON schema enum.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Final, Literal, TypeVar

from pydantic import AfterValidator, Field

from schemas import reference_data
from schemas.reference_data import CURRENT_CENSUS_YEAR


class Sex(StrEnum):
    """Sex as recorded in the CIN census 2024-25: M, F or U (unknown, and always for the unborn)."""

    MALE = "M"
    FEMALE = "F"
    UNKNOWN = "U"


class ConcernCategory(StrEnum):
    """What a referral is worried about."""

    NEGLECT = "neglect"
    PHYSICAL_ABUSE = "physical_abuse"
    EMOTIONAL_ABUSE = "emotional_abuse"
    SEXUAL_ABUSE = "sexual_abuse"
    EXPLOITATION = "exploitation"
    OTHER = "other"


class NeglectForm(StrEnum):
    """The six forms of neglect; toolkit sub-areas map onto these."""

    MEDICAL = "medical"
    NUTRITIONAL = "nutritional"
    EMOTIONAL = "emotional"
    EDUCATIONAL = "educational"
    PHYSICAL = "physical"
    SUPERVISION = "supervision"
    """Lack of supervision and guidance."""


NEGLECT_FORMS: Final[tuple[str, ...]] = tuple(form.value for form in NeglectForm)
"""The six forms as text, in `NeglectForm`'s order."""

if TYPE_CHECKING:
    NeglectFormName = str
else:
    NeglectFormName = Literal[NEGLECT_FORMS]
"""A form of neglect as plain text (a `Literal` of `NeglectForm`'s values): for types whose
values must stay `str`, such as the keys of a score's neglect-form profile, which orjson
serialises and which an enum member as a key would break."""


class RiskFactor(StrEnum):
    """Factors in the child, the parents or the wider world that make neglect more likely."""

    # child
    SEND = "send"
    BEHAVIOURAL_PROBLEMS = "behavioural_problems"
    CHRONIC_ILL_HEALTH = "chronic_ill_health"
    YOUNG_CARER = "young_carer"
    # parental
    PARENTAL_MENTAL_HEALTH = "parental_mental_health"
    SUBSTANCE_MISUSE = "substance_misuse"
    DOMESTIC_ABUSE = "domestic_abuse"
    PARENT_EXPERIENCED_MALTREATMENT = "parent_experienced_maltreatment"
    NO_POSITIVE_PARENTING_EXPERIENCE = "no_positive_parenting_experience"
    PARENTAL_LEARNING_DIFFICULTY = "parental_learning_difficulty"
    # wider
    POVERTY = "poverty"
    UNEMPLOYMENT = "unemployment"
    POOR_SOCIAL_SUPPORT = "poor_social_support"
    HARMFUL_ONLINE_EXPOSURE = "harmful_online_exposure"


class Vulnerability(StrEnum):
    """Groups of children especially vulnerable to neglect."""

    UNDER_ONE = "under_one"
    PREMATURE_OR_LOW_BIRTH_WEIGHT = "premature_or_low_birth_weight"
    MISSING_FROM_HOME = "missing_from_home"
    MISSING_FROM_EDUCATION = "missing_from_education"
    IN_CARE = "in_care"
    ASYLUM_SEEKING_OR_REFUGEE = "asylum_seeking_or_refugee"
    ADOLESCENT = "adolescent"
    """Year 6 upwards, taken as aged 10 or over."""


class AgencyType(StrEnum):
    """The kind of agency a referrer or API client works for."""

    SCHOOL = "school"
    EARLY_YEARS = "early_years"
    HEALTH = "health"
    POLICE = "police"
    EARLY_HELP = "early_help"
    LOCAL_AUTHORITY = "local_authority"
    HOUSING = "housing"
    VOLUNTARY_SECTOR = "voluntary_sector"
    OTHER = "other"


H = TypeVar("H", bound=Hashable)


def _refuse_duplicates(values: list[H]) -> list[H]:
    seen: set[H] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"must not contain duplicates ({value!s} appears more than once)")
        seen.add(value)
    return values


UniqueList = Annotated[
    list[H], AfterValidator(_refuse_duplicates), Field(json_schema_extra={"uniqueItems": True})
]
"""A JSON array whose items must all differ; a duplicate is refused rather than dropped."""


def _code_checker(name: str) -> Callable[[str], str]:
    def check(code: str) -> str:
        if not reference_data.is_code(name, code):
            raise ValueError(f"{code!r} is not a CIN {CURRENT_CENSUS_YEAR} {name} code")
        return code

    return check


def _code_schema(name: str) -> dict[str, object]:
    codes = reference_data.code_list(name)
    return {
        "enum": list(codes),
        "description": f"CIN census {CURRENT_CENSUS_YEAR} {name} code: "
        + "; ".join(f"{code} {label}" for code, label in codes.items()),
    }


ReferralSourceCode = Annotated[
    str,
    AfterValidator(_code_checker(reference_data.REFERRAL_SOURCE)),
    Field(json_schema_extra=_code_schema(reference_data.REFERRAL_SOURCE)),
]
EthnicityCode = Annotated[
    str,
    AfterValidator(_code_checker(reference_data.ETHNICITY)),
    Field(json_schema_extra=_code_schema(reference_data.ETHNICITY)),
]
DisabilityCode = Annotated[
    str,
    AfterValidator(_code_checker(reference_data.DISABILITY)),
    Field(json_schema_extra=_code_schema(reference_data.DISABILITY)),
]
CategoryOfAbuseCode = Annotated[
    str,
    AfterValidator(_code_checker(reference_data.CATEGORY_OF_ABUSE)),
    Field(json_schema_extra=_code_schema(reference_data.CATEGORY_OF_ABUSE)),
]
"""CP plan category (NEG, PHY, EMO, SAB, MUL), for case events."""
