"""Children on the wire: as sent inside a referral, as named by other records, and as read back."""

from __future__ import annotations

import calendar
from datetime import date, datetime
from typing import Annotated, Final, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.common import (
    IsoDate,
    LongText,
    PublicModel,
    ShortText,
    StrictModel,
    not_in_future,
    today_in_uk,
)
from schemas.identifiers import is_valid_la_child_id, is_valid_nhs_number, is_valid_upn
from schemas.vocabulary import DisabilityCode, EthnicityCode, Sex, UniqueList

ADULT_AGE_YEARS: Final = 18
EXPECTED_BIRTH_GRACE_DAYS: Final = 31
"""How long after the expected date a child may still be referred as unborn."""
EXPECTED_BIRTH_HORIZON_MONTHS: Final = 10
"""How far ahead an expected date of birth may lie: a pregnancy lasts about nine months."""


def add_months(start: date, months: int) -> date:
    """`start` moved by whole calendar months, clamped to the end of a shorter month."""
    month_index = start.year * 12 + start.month - 1 + months
    year, month = divmod(month_index, 12)
    last_day = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(start.day, last_day))


def eighteenth_birthday(date_of_birth: date) -> date:
    """The day a child becomes an adult; someone born on 29 February turns 18 on 1 March."""
    try:
        return date_of_birth.replace(year=date_of_birth.year + ADULT_AGE_YEARS)
    except ValueError:
        return date(date_of_birth.year + ADULT_AGE_YEARS, 3, 1)


def _check_nhs_number(value: str) -> str:
    if not is_valid_nhs_number(value):
        raise ValueError("not a valid NHS number: the modulus-11 check digit does not match")
    return value


def _check_upn(value: str) -> str:
    if not is_valid_upn(value):
        raise ValueError("not a valid UPN: expected a letter, 11 digits, then a digit or letter")
    # UPN letters are upper case in DfE returns; normalising here makes matching exact.
    return value.upper()


def _check_la_child_id(value: str) -> str:
    if not is_valid_la_child_id(value):
        raise ValueError("not a valid LA child id: expected 1 to 20 letters and digits")
    return value


def _normalise_postcode(value: str) -> str:
    compact = value.replace(" ", "").upper()
    return f"{compact[:-3]} {compact[-3:]}"


NhsNumber = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{10}$"),
    AfterValidator(_check_nhs_number),
    Field(description="NHS number: 10 digits, no spaces, valid modulus-11 check digit"),
]
Upn = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z][0-9]{11}[0-9A-Za-z]$"),
    AfterValidator(_check_upn),
    Field(description="Unique pupil number; returned in upper case"),
]
LaChildId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9]{1,20}$"),
    AfterValidator(_check_la_child_id),
    Field(description="The local authority's own child id: 1 to 20 letters and digits"),
]
UkPostcode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z]{1,2}[0-9][A-Za-z0-9]? ?[0-9][A-Za-z]{2}$"),
    AfterValidator(_normalise_postcode),
    Field(description="UK postcode; returned in upper case with one space, e.g. `SW1A 1AA`"),
]


# ISO text, not a number pydantic would read as a Unix time.
_DateOfBirth = Annotated[
    IsoDate | None, AfterValidator(not_in_future("date_of_birth must not be in the future"))
]


class AddressIn(StrictModel):
    """Where the child lives (for an unborn child, where the expectant parent lives)."""

    lines: list[ShortText] = Field(min_length=1, max_length=4, description="Street address lines")
    town: ShortText | None = None
    postcode: UkPostcode | None = None


class ChildIn(StrictModel):
    """The child a referral is about: `date_of_birth`, or `expected_date_of_birth` if unborn."""

    given_name: ShortText | None = Field(default=None, description="Absent when not yet named")
    family_name: ShortText
    aliases: list[ShortText] = Field(
        default_factory=list, max_length=20, description="Other names the child is known by"
    )
    date_of_birth: _DateOfBirth = None
    expected_date_of_birth: date | None = Field(
        default=None,
        validate_default=True,
        description="For an unborn child only; then `sex` must be `U`",
    )
    sex: Sex
    ethnicity: EthnicityCode | None = None
    first_language: ShortText | None = None
    interpreter_needed: bool = False
    communication_needs: LongText | None = None
    disabilities: UniqueList[DisabilityCode] = Field(
        default_factory=list,
        description="CIN disability codes; `NONE` cannot be combined with another code",
    )
    address: AddressIn | None = None
    school_or_setting: ShortText | None = None
    gp_practice: ShortText | None = None
    nhs_number: NhsNumber | None = None
    la_child_id: LaChildId | None = None
    upn: Upn | None = None

    @field_validator("date_of_birth")
    @classmethod
    def _refuse_adult(cls, value: date | None) -> date | None:
        if value is not None and eighteenth_birthday(value) <= today_in_uk():
            raise ValueError("date_of_birth: the child must be under 18")
        return value

    @field_validator("expected_date_of_birth")
    @classmethod
    def _check_expected_date_of_birth(cls, value: date | None, info: ValidationInfo) -> date | None:
        if "date_of_birth" not in info.data:
            # date_of_birth was itself invalid and already reported; say nothing more.
            return value
        has_date_of_birth = info.data["date_of_birth"] is not None
        if has_date_of_birth == (value is not None):
            raise ValueError(
                "expected_date_of_birth: send exactly one of date_of_birth (born) "
                "or expected_date_of_birth (unborn)"
            )
        if value is None:
            return value
        today = today_in_uk()
        if (today - value).days > EXPECTED_BIRTH_GRACE_DAYS:
            raise ValueError(
                f"expected_date_of_birth: more than {EXPECTED_BIRTH_GRACE_DAYS} days ago; "
                "send the date_of_birth instead"
            )
        if value > add_months(today, EXPECTED_BIRTH_HORIZON_MONTHS):
            raise ValueError(
                f"expected_date_of_birth: more than {EXPECTED_BIRTH_HORIZON_MONTHS} months ahead"
            )
        return value

    @field_validator("sex")
    @classmethod
    def _require_unknown_sex_when_unborn(cls, value: Sex, info: ValidationInfo) -> Sex:
        if info.data.get("expected_date_of_birth") is not None and value != Sex.UNKNOWN:
            raise ValueError("sex: must be U for an unborn child (expected_date_of_birth is set)")
        return value

    @field_validator("disabilities")
    @classmethod
    def _refuse_none_with_others(cls, value: list[str]) -> list[str]:
        if "NONE" in value and len(value) > 1:
            raise ValueError("disabilities: NONE cannot be combined with another disability code")
        return value


class AddressPublic(PublicModel):
    """An address as it was sent."""

    lines: list[str]
    town: str | None = None
    postcode: str | None = None


class ChildDetailsPublic(PublicModel):
    """The child as described in a referral when it was sent.

    Deliberately free of the date and code-list checks of `ChildIn`: those depend on the day and
    the census year, and a stored referral must stay readable after both have moved on.
    """

    given_name: str | None = None
    family_name: str
    aliases: list[str] = Field(default_factory=list)
    date_of_birth: date | None = None
    expected_date_of_birth: date | None = None
    sex: Sex
    ethnicity: str | None = None
    first_language: str | None = None
    interpreter_needed: bool = False
    communication_needs: str | None = None
    disabilities: list[str] = Field(default_factory=list)
    address: AddressPublic | None = None
    school_or_setting: str | None = None
    gp_practice: str | None = None
    nhs_number: str | None = None
    la_child_id: str | None = None
    upn: str | None = None


class ChildRef(StrictModel):
    """Names a child from an assessment or case event; the service matches it to a known child.

    At least one of `nhs_number`, `la_child_id`, `upn`, or `family_name` with `date_of_birth`.
    """

    nhs_number: NhsNumber | None = None
    la_child_id: LaChildId | None = None
    upn: Upn | None = None
    family_name: ShortText | None = None
    date_of_birth: _DateOfBirth = None

    @model_validator(mode="after")
    def _require_something_to_match_on(self) -> ChildRef:
        has_identifier = any((self.nhs_number, self.la_child_id, self.upn))
        has_name_and_birth = self.family_name is not None and self.date_of_birth is not None
        if not (has_identifier or has_name_and_birth):
            raise ValueError(
                "child: send nhs_number, la_child_id, upn, or family_name with date_of_birth"
            )
        return self


class ChildPublic(PublicModel):
    """A child's identity as the service holds it."""

    id: UUID
    given_name: str | None = None
    family_name: str | None = None
    aliases: list[str] = Field(default_factory=list)
    date_of_birth: date | None = None
    expected_date_of_birth: date | None = None
    sex: Sex | None = None
    nhs_number: str | None = None
    la_child_id: str | None = None
    upn: str | None = None


TimelineKind = Literal["referral", "assessment", "case_event"]


class ChildTimelineEntry(PublicModel):
    """One record about the child, newest first in a timeline; fields not of its kind are null."""

    kind: TimelineKind
    id: UUID = Field(description="The referral's, assessment's or case event's id")
    occurred_at: datetime = Field(
        description="Received (referral), completed (assessment) or occurred (case event)"
    )
    summary: str = Field(description="One line a practitioner can read, without personal data")
    status: str | None = Field(default=None, description="Referral status")
    event_type: str | None = Field(default=None, description="Case event type")
    level_of_need: int | None = Field(default=None, description="Assessment level of need")
    agency_name: str | None = Field(default=None, description="Agency that made the record")


class ChildWithTimeline(ChildPublic):
    """A child with the records the caller is allowed to see."""

    timeline: list[ChildTimelineEntry] = Field(default_factory=list)
