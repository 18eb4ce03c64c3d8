"""Referrals (Requests for Support) on the wire: create, decide, withdraw, read back (SPEC 2.2)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Final
from uuid import UUID

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    computed_field,
    field_validator,
)

from schemas.census import CensusEpisodePublic
from schemas.children import ChildDetailsPublic, ChildIn
from schemas.common import (
    NOT_BLANK_PATTERN,
    DocumentedPattern,
    LongText,
    PastDate,
    PastInstant,
    PublicModel,
    ShortText,
    StrictModel,
)
from schemas.examples import (
    DECISION_CREATE_EXAMPLE,
    REFERRAL_CREATE_EXAMPLE,
    WITHDRAW_CREATE_EXAMPLE,
)
from schemas.vocabulary import (
    AgencyType,
    ConcernCategory,
    NeglectForm,
    ReferralSourceCode,
    RiskFactor,
    UniqueList,
    Vulnerability,
)

SECTION47_OUTCOME: Final = "section47_strategy_discussion"
DEFAULT_DECISION_OUTCOMES: Final[tuple[str, ...]] = (
    SECTION47_OUTCOME,
    "child_in_need_assessment",
    "family_wellbeing_intensive_support",
    "parenting_support",
    "family_hub_support",
    "early_help",
    "signposted_universal",
    "no_further_action",
)
"""Front Door decision outcomes a council gets unless it configures its own list."""

IMMEDIATE_RISK_GUIDANCE: Final = (
    "This referral says the child is at immediate risk. If there is an immediate risk to the "
    "child's life, call 999 now, then telephone the Children's Front Door. Do not rely on this "
    "request alone: it is not watched as an emergency line."
)

EMAIL_PATTERN: Final = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PHONE_PATTERN: Final = r"^\+?\(?[0-9][0-9 ()-]{5,19}$"


def _refuse_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _check_decision_outcome(value: str) -> str:
    if value not in DEFAULT_DECISION_OUTCOMES:
        raise ValueError(f"outcome: must be one of {', '.join(DEFAULT_DECISION_OUTCOMES)}")
    return value


RequiredLongText = Annotated[
    LongText,
    StringConstraints(min_length=1),
    AfterValidator(_refuse_blank),
    DocumentedPattern(NOT_BLANK_PATTERN),
]
"""Free text that must say something: 1-10,000 characters, not only whitespace."""

ExternalReference = Annotated[ShortText, StringConstraints(max_length=100)]
Email = Annotated[str, StringConstraints(max_length=254, pattern=EMAIL_PATTERN)]
Phone = Annotated[str, StringConstraints(pattern=PHONE_PATTERN)]
DecisionOutcome = Annotated[
    str,
    AfterValidator(_check_decision_outcome),
    Field(json_schema_extra={"enum": list(DEFAULT_DECISION_OUTCOMES)}),
]


class ReferralStatus(StrEnum):
    """Where a referral is in its life: `received` becomes `decided` or `withdrawn`, then stops."""

    RECEIVED = "received"
    DECIDED = "decided"
    WITHDRAWN = "withdrawn"


class ParentalConsent(StrEnum):
    """Whether the parents or carers agreed to the referral."""

    GIVEN = "given"
    REFUSED = "refused"
    NOT_SOUGHT = "not_sought"


class ReferrerIn(StrictModel):
    """Who is making the referral; `email` or `phone` (or both) so the Front Door can call back.

    Access to the referral follows the API client's registered agency, not these fields.
    """

    agency_type: AgencyType
    agency_name: ShortText
    name: ShortText
    role: ShortText
    email: Email | None = None
    phone: Phone | None = Field(default=None, validate_default=True)
    source_code: ReferralSourceCode

    @field_validator("phone")
    @classmethod
    def _require_a_contact(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "email" not in info.data:
            return value
        if value is None and info.data["email"] is None:
            raise ValueError("phone: send a phone number or an email address (or both)")
        return value


class HouseholdMemberIn(StrictModel):
    """A person in or around the child's home."""

    name: ShortText
    relationship: ShortText = Field(description="To the child, e.g. mother, stepfather, lodger")
    has_parental_responsibility: bool
    lives_with_child: bool
    date_of_birth: PastDate | None = None


class ConcernsIn(StrictModel):
    """What the referrer is worried about and why."""

    categories: UniqueList[ConcernCategory] = Field(min_length=1)
    neglect_forms: UniqueList[NeglectForm] = Field(
        default_factory=list,
        validate_default=True,
        description="Required and non-empty when `neglect` is a category; forbidden otherwise",
    )
    risk_factors: UniqueList[RiskFactor] = Field(default_factory=list)
    vulnerabilities: UniqueList[Vulnerability] = Field(default_factory=list)
    summary: RequiredLongText
    what_has_changed: LongText | None = None
    impact_on_child: LongText | None = None
    strengths_and_protective_factors: LongText | None = None
    actions_taken: LongText | None = None
    child_views: LongText | None = None

    @field_validator("neglect_forms")
    @classmethod
    def _match_neglect_category(
        cls, value: list[NeglectForm], info: ValidationInfo
    ) -> list[NeglectForm]:
        if "categories" not in info.data:
            return value
        neglect_is_a_category = ConcernCategory.NEGLECT in info.data["categories"]
        if neglect_is_a_category and not value:
            raise ValueError("neglect_forms: required when 'neglect' is a category")
        if not neglect_is_a_category and value:
            raise ValueError("neglect_forms: only allowed when 'neglect' is a category")
        return value


class ParentalAwarenessIn(StrictModel):
    """Whether the parents or carers know about the referral and agree to it."""

    informed: bool
    consent: ParentalConsent
    reason_not_informed: RequiredLongText | None = Field(
        default=None,
        validate_default=True,
        description="Required when `informed` is false: why telling them puts the child at risk",
    )

    @field_validator("reason_not_informed")
    @classmethod
    def _require_reason(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("informed") is False and value is None:
            raise ValueError("reason_not_informed: required when informed is false")
        return value


class ReferralCreate(StrictModel):
    """A Request for Support about one child."""

    model_config = ConfigDict(json_schema_extra={"examples": [REFERRAL_CREATE_EXAMPLE]})

    external_reference: ExternalReference = Field(
        description="The sender's own id for this referral; unique per API client"
    )
    received_at: PastInstant | None = Field(
        default=None,
        description="When the referral was received; defaults to now. Earlier for back-loading",
    )
    referrer: ReferrerIn
    child: ChildIn
    household: list[HouseholdMemberIn] = Field(default_factory=list, max_length=30)
    concerns: ConcernsIn
    immediate_risk: bool = Field(
        description="The child may be at immediate risk: marks the referral urgent. This request "
        "does not replace a 999 call and a phone call to the Front Door"
    )
    parental_awareness: ParentalAwarenessIn
    dsl_consulted: bool = Field(description="The referrer's designated safeguarding lead was asked")


class DecisionCreate(StrictModel):
    """The Front Door's decision on a referral."""

    model_config = ConfigDict(json_schema_extra={"examples": [DECISION_CREATE_EXAMPLE]})

    outcome: DecisionOutcome
    rationale: RequiredLongText
    decided_by: ShortText
    decided_at: PastInstant | None = Field(default=None, description="Defaults to now")


class WithdrawCreate(StrictModel):
    """The referrer withdraws a referral that has not been decided."""

    model_config = ConfigDict(json_schema_extra={"examples": [WITHDRAW_CREATE_EXAMPLE]})

    reason: RequiredLongText


class ReferrerPublic(PublicModel):
    """The referrer as sent."""

    agency_type: str
    agency_name: str
    name: str
    role: str
    email: str | None = None
    phone: str | None = None
    source_code: str


class HouseholdMemberPublic(PublicModel):
    """A household member as sent."""

    name: str
    relationship: str
    has_parental_responsibility: bool
    lives_with_child: bool
    date_of_birth: date | None = None


class ConcernsPublic(PublicModel):
    """The concerns as sent."""

    categories: list[ConcernCategory]
    neglect_forms: list[NeglectForm] = Field(default_factory=list)
    risk_factors: list[RiskFactor] = Field(default_factory=list)
    vulnerabilities: list[Vulnerability] = Field(default_factory=list)
    summary: str
    what_has_changed: str | None = None
    impact_on_child: str | None = None
    strengths_and_protective_factors: str | None = None
    actions_taken: str | None = None
    child_views: str | None = None


class ParentalAwarenessPublic(PublicModel):
    """Parental awareness as sent."""

    informed: bool
    consent: ParentalConsent
    reason_not_informed: str | None = None


class DecisionPublic(PublicModel):
    """What the Front Door decided."""

    outcome: str
    rationale: str
    decided_by: str
    decided_at: datetime
    strategy_discussion_due_at: datetime | None = Field(
        default=None, description="Set for a Section 47 outcome: received_at + 24 h"
    )


_NOT_IN_CENSUS = "; null for a referral imported from the CIN census, which does not record it"


class ReferralPublic(PublicModel):
    """A referral as the service holds it, with what was sent and what has happened since.

    A referral imported from the Children in Need census (`census` is set) is one episode of
    need: the census records less than a Request for Support, so `urgent`, `decision_due_at`,
    `referrer`, `child`, `concerns`, `immediate_risk`, `parental_awareness` and `dsl_consulted`
    are null, `decision` is null, and `status` is `decided`; `census` holds what the census says.
    """

    id: UUID
    external_reference: str
    status: ReferralStatus
    urgent: bool | None = Field(description="Marked urgent (immediate risk)" + _NOT_IN_CENSUS)
    received_at: datetime
    decision_due_at: datetime | None = Field(description="received_at + 24 h" + _NOT_IN_CENSUS)
    child_id: UUID
    rereferral: bool = Field(
        description="The same child had a referral received in the 12 months before this one"
    )
    rereferral_count: int = Field(ge=0, description="How many referrals those 12 months held")
    agency_type: str = Field(description="From the API client's registration")
    agency_name: str = Field(description="From the API client's registration")
    client_id: str
    referrer: ReferrerPublic | None = Field(default=None, description="As sent" + _NOT_IN_CENSUS)
    child: ChildDetailsPublic | None = Field(
        default=None, description="The child as the referrer described them" + _NOT_IN_CENSUS
    )
    household: list[HouseholdMemberPublic] = Field(default_factory=list)
    concerns: ConcernsPublic | None = Field(default=None, description="As sent" + _NOT_IN_CENSUS)
    immediate_risk: bool | None = Field(default=None, description="As sent" + _NOT_IN_CENSUS)
    parental_awareness: ParentalAwarenessPublic | None = Field(
        default=None, description="As sent" + _NOT_IN_CENSUS
    )
    dsl_consulted: bool | None = Field(default=None, description="As sent" + _NOT_IN_CENSUS)
    census: CensusEpisodePublic | None = Field(
        default=None,
        description="Set only for a referral imported from the CIN census: the episode as the "
        "census file described it",
    )
    decision: DecisionPublic | None = None
    withdrawn_at: datetime | None = None
    withdrawal_reason: str | None = None
    created_at: datetime

    @computed_field(  # type: ignore[prop-decorator]
        description="When immediate_risk is set: an immediate risk to life is a 999 call and a "
        "phone call to the Front Door, not only this request"
    )
    @property
    def immediate_risk_guidance(self) -> str | None:
        return IMMEDIATE_RISK_GUIDANCE if self.immediate_risk else None
