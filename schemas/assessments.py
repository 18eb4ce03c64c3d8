"""Neglect toolkit assessments on the wire: what a practitioner's system sends, and what the
service computes from it.

No single total score exists anywhere in these types: good care in one area must not hide poor
care in another.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import ConfigDict, Field, Strict, StringConstraints, model_validator

from .children import ChildRef
from .common import NUL_FREE, LongText, PastDate, PublicModel, ShortText, StrictModel
from .examples import ASSESSMENT_CREATE_EXAMPLE, SCORE_REQUEST_EXAMPLE
from .toolkits import ToolkitId, ToolkitVersionText
from .vocabulary import NeglectFormName

ToolkitPartId = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,79}$"),
    Field(description="An item or area id of the toolkit definition"),
]
Grade = Annotated[int, Strict(), Field(ge=0, le=10, description="A grade of the toolkit's scale")]
"""Strict: `"3"` or `true` for a grade is a mistake worth reporting, not something to coerce."""


HouseholdRef = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.:/#-]{0,99}$"),
    Field(description="The sender's reference for the household, shared by siblings"),
]
Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000),
    *NUL_FREE,
]
"""Free text that must say something (an override's reason)."""


def _has_text(value: str | None) -> bool:
    return value is not None and value.strip() != ""


# --- inputs --------------------------------------------------------------------------------------


class AssessorIn(StrictModel):
    """Who carried out the assessment. `agency` is informational: the record's agency is the
    calling client's registered agency."""

    name: ShortText
    role: ShortText
    agency: ShortText | None = None


class ItemResponseIn(StrictModel):
    """The grade given for one item, or `not_known` when it could not be judged."""

    item_id: ToolkitPartId
    grade: Grade | Literal["not_known"] = Field(
        description="A grade of the toolkit's scale, or `not_known` (never scored)"
    )
    evidence: LongText | None = Field(default=None, description="What the grade is based on")


class ChildVoiceIn(StrictModel):
    """The child's own voice. `reason_not_captured` is required when the child was not seen or
    their words are not recorded."""

    seen: bool
    seen_alone: bool = False
    method: ShortText | None = Field(
        default=None, description="How the child's views were gathered (conversation, drawing...)"
    )
    words: LongText | None = Field(default=None, description="The child's words, as they put them")
    reason_not_captured: LongText | None = None

    @model_validator(mode="after")
    def _require_reason_when_not_captured(self) -> ChildVoiceIn:
        if self.seen_alone and not self.seen:
            raise ValueError("seen_alone: a child who was not seen cannot have been seen alone")
        if (not self.seen or not _has_text(self.words)) and not _has_text(self.reason_not_captured):
            raise ValueError(
                "reason_not_captured: required when the child was not seen or their words are "
                "not recorded"
            )
        return self


class AreaOverrideIn(StrictModel):
    """A practitioner's judgement replacing an area's computed grade; the reason is required."""

    area_id: ToolkitPartId
    grade: Grade
    reason: Reason


class TargetIn(StrictModel):
    """A grade to reach on one item by a review date; the next re-assessment says whether it was."""

    item_id: ToolkitPartId
    target_grade: Grade
    review_on: date


def _refuse_duplicates(values: list[str], what: str) -> None:
    repeated = sorted(value for value, count in Counter(values).items() if count > 1)
    if repeated:
        raise ValueError(f"{what}: each id at most once; repeated: {', '.join(repeated)}")


class _ScoredInputs(StrictModel):
    responses: list[ItemResponseIn] = Field(
        max_length=1_000,
        description=(
            "One response per item in the child's age band (and none for items outside it); "
            "send `not_known` for an item that could not be judged"
        ),
    )
    overrides: list[AreaOverrideIn] = Field(default_factory=list, max_length=50)
    previous_assessment_id: UUID | None = Field(
        default=None,
        description=(
            "The child's last assessment with the same toolkit: adds distance travelled and "
            "whether its targets were met"
        ),
    )

    @model_validator(mode="after")
    def _one_response_per_item(self) -> _ScoredInputs:
        _refuse_duplicates([response.item_id for response in self.responses], "responses")
        _refuse_duplicates([override.area_id for override in self.overrides], "overrides")
        return self


class AssessmentCreate(_ScoredInputs):
    """A completed toolkit assessment of one child."""

    model_config = ConfigDict(json_schema_extra={"examples": [ASSESSMENT_CREATE_EXAMPLE]})

    child: ChildRef
    toolkit_id: ToolkitId
    toolkit_version: ToolkitVersionText
    assessor: AssessorIn
    started_on: PastDate | None = None
    completed_on: PastDate
    strengths: LongText | None = Field(default=None, description="What is working well")
    child_voice: ChildVoiceIn
    parent_carer_views: LongText | None = None
    targets: list[TargetIn] = Field(default_factory=list, max_length=500)
    household_ref: HouseholdRef | None = None

    @model_validator(mode="after")
    def _check_dates(self) -> AssessmentCreate:
        if self.started_on is not None and self.started_on > self.completed_on:
            raise ValueError("started_on: must not be after completed_on")
        for target in self.targets:
            if target.review_on < self.completed_on:
                raise ValueError(
                    f"targets: review_on of item '{target.item_id}' is before completed_on"
                )
        _refuse_duplicates([target.item_id for target in self.targets], "targets")
        return self


class ScoreRequest(_ScoredInputs):
    """Responses to score without storing anything (a dry run)."""

    model_config = ConfigDict(json_schema_extra={"examples": [SCORE_REQUEST_EXAMPLE]})

    child_date_of_birth: date | None = Field(
        default=None,
        description="Decides which age-banded items apply; unknown: age-banded items are optional",
    )
    completed_on: PastDate | None = Field(
        default=None, description="The day the child's age is taken on; default today"
    )
    strengths: LongText | None = Field(default=None, description="What is working well")


# --- outputs -------------------------------------------------------------------------------------


class AssessorPublic(PublicModel):
    name: str
    role: str
    agency: str | None = None


class ItemResponsePublic(PublicModel):
    item_id: str
    grade: int | Literal["not_known"]
    evidence: str | None = None


class ChildVoicePublic(PublicModel):
    seen: bool
    seen_alone: bool
    method: str | None = None
    words: str | None = None
    reason_not_captured: str | None = None


class AreaOverridePublic(PublicModel):
    area_id: str
    grade: int
    reason: str


class TargetPublic(PublicModel):
    item_id: str
    target_grade: int
    review_on: date


class LevelOfNeedPublic(PublicModel):
    level: int = Field(description="1 universal ... 4 specialist / child protection")
    name: str
    recommended_action: str
    refer_to_front_door: bool


class StrengthsPublic(PublicModel):
    area_ids: list[str] = Field(description="Areas graded at the best two grades of the scale")
    text: str | None = Field(default=None, description="What is working well, as written")


class DistanceTravelledPublic(PublicModel):
    """Previous grade minus current grade per id: positive is improvement; null where either
    assessment has no grade (not known, not applicable, or not in both toolkit versions)."""

    items: dict[str, int | None]
    sub_areas: dict[str, int | None]
    areas: dict[str, int | None]


class TargetMetPublic(PublicModel):
    """A target set at the previous assessment, judged against this one."""

    item_id: str
    target_grade: int
    current_grade: int | None
    met: bool | None = Field(description="current grade <= target; null when not graded now")


class AssessmentOutcome(PublicModel):
    """What the service computes from an assessment's inputs, deterministically.

    Grade maps are keyed by id in the definition's order; null means no scored evidence. Area
    grades are effective (after overrides); `computed_area_grades` are before them.
    """

    item_grades: dict[str, int | None]
    sub_area_grades: dict[str, int | None]
    computed_area_grades: dict[str, int | None]
    area_grades: dict[str, int | None]
    overridden_area_ids: list[str]
    neglect_form_profile: dict[NeglectFormName, int | None] = Field(
        description="Worst grade of the sub-areas mapped to each form of neglect"
    )
    highest_area_grade: int | None
    areas_at_concern: int
    areas_at_significant_concern: int
    level_of_need: LevelOfNeedPublic
    strengths: StrengthsPublic
    insufficient_evidence_area_ids: list[str] = Field(
        description="Assessed areas whose responses were all `not_known`"
    )
    insufficient_evidence_sub_area_ids: list[str]
    not_applicable_area_ids: list[str] = Field(
        description="Areas with no item in the child's age band"
    )
    not_applicable_sub_area_ids: list[str]
    distance_travelled: DistanceTravelledPublic | None = Field(
        default=None, description="Only for a re-assessment"
    )
    targets_met: list[TargetMetPublic] = Field(
        default_factory=list, description="The previous assessment's targets, judged now"
    )


class ScorePublic(PublicModel):
    """A dry run's answer: the outcome, and the definition it was scored against."""

    toolkit_id: str
    toolkit_version: str
    toolkit_sha256: str
    child_age_years: int | None
    outcome: AssessmentOutcome


class AssessmentSummary(PublicModel):
    """One assessment in a child's trajectory, without its free text."""

    id: UUID
    child_id: UUID
    agency_name: str
    toolkit_id: str
    toolkit_version: str
    toolkit_sha256: str
    completed_on: date
    child_age_years: int | None
    previous_assessment_id: UUID | None
    household_ref: str | None
    area_grades: dict[str, int | None]
    neglect_form_profile: dict[NeglectFormName, int | None]
    highest_area_grade: int | None
    areas_at_concern: int
    areas_at_significant_concern: int
    level_of_need: LevelOfNeedPublic
    distance_travelled: DistanceTravelledPublic | None = None


class AssessmentPublic(PublicModel):
    """A stored assessment: its inputs as sent and the outcome computed from them."""

    id: UUID
    child_id: UUID
    agency_type: str = Field(description="The sending client's registered agency type")
    agency_name: str = Field(description="The sending client's registered agency")
    toolkit_id: str
    toolkit_version: str
    toolkit_sha256: str = Field(description="sha256 of the definition it was scored against")
    assessor: AssessorPublic
    started_on: date | None
    completed_on: date
    child_age_years: int | None = Field(
        description="Whole years on completed_on; 0 before birth; null when no date of birth"
    )
    responses: list[ItemResponsePublic]
    strengths: str | None
    child_voice: ChildVoicePublic
    parent_carer_views: str | None
    overrides: list[AreaOverridePublic]
    targets: list[TargetPublic]
    previous_assessment_id: UUID | None
    household_ref: str | None
    created_at: datetime | None
    outcome: AssessmentOutcome
