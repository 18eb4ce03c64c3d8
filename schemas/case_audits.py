"""Multi-agency case audits on the wire (SPEC 2.8): a panel's grading of the work with one child.

Both strategies measure success by such audits: a small panel from several agencies reads a sample
of cases (an early help assessment, a child in need plan or a child protection plan), grades the
practice and its impact on the child, and records whether the neglect toolkit was used and whether
its use was effective. The grading scale is configuration (`case_audit_grades.yaml`).
"""

from __future__ import annotations

import functools
from datetime import date, datetime
from enum import StrEnum
from importlib import resources
from typing import Annotated, Final, Self
from uuid import UUID

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)

from .children import ChildRef
from .common import IsoDate, LongText, PublicModel, StrictModel, not_in_future
from .examples import CASE_AUDIT_CREATE_EXAMPLE
from .vocabulary import AgencyType, UniqueList


class AuditedWork(StrEnum):
    """What the panel audited."""

    EARLY_HELP_ASSESSMENT = "early_help_assessment"
    CHILD_IN_NEED_PLAN = "child_in_need_plan"
    CHILD_PROTECTION_PLAN = "child_protection_plan"


AUDITED_WORK: Final[tuple[str, ...]] = tuple(work.value for work in AuditedWork)
"""The three kinds of audited work as text, in `AuditedWork`'s order."""


# --- The grading scale (configuration) ---------------------------------------------------------


class AuditGradeDefinition(BaseModel):
    """One grade of the scale: what clients send, how it reads, whether it counts as good."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    label: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    good_or_better: bool


class AuditGradeScale(BaseModel):
    """The grading scale, best grade first (`case_audit_grades.yaml`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grades: tuple[AuditGradeDefinition, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _check(self) -> Self:
        ids = [grade.id for grade in self.grades]
        if len(set(ids)) != len(ids):
            raise ValueError("grade ids must not repeat")
        flags = [grade.good_or_better for grade in self.grades]
        # Best first: "good or better" must be the grades above some line, and not all or none.
        if not flags[0] or flags[-1] or flags != sorted(flags, reverse=True):
            raise ValueError("good_or_better must be true for a leading run of grades, not all")
        return self


@functools.cache
def audit_grade_scale() -> tuple[AuditGradeDefinition, ...]:
    """The grading scale, best first; read and checked once (a bad file fails at import)."""
    text = resources.files(__package__).joinpath("case_audit_grades.yaml").read_text("utf-8")
    return AuditGradeScale.model_validate(yaml.safe_load(text)).grades


AUDIT_GRADES: Final[tuple[str, ...]] = tuple(grade.id for grade in audit_grade_scale())
"""Every grade id, best first."""
GOOD_OR_BETTER_GRADES: Final[tuple[str, ...]] = tuple(
    grade.id for grade in audit_grade_scale() if grade.good_or_better
)
"""The grades the audit indicators count as good or better."""


def _check_grade(value: str) -> str:
    if value not in AUDIT_GRADES:
        raise ValueError(f"must be one of the audit grades: {', '.join(AUDIT_GRADES)}")
    return value


AuditGrade = Annotated[
    str,
    AfterValidator(_check_grade),
    Field(
        json_schema_extra={
            "enum": list(AUDIT_GRADES),
            "description": "A grade of the partnership's audit scale, best first: "
            + "; ".join(f"{grade.id} ({grade.label})" for grade in audit_grade_scale()),
        }
    ),
]


# --- Inputs and outputs ------------------------------------------------------------------------


class CaseAuditCreate(StrictModel):
    """One multi-agency audit of the work with one child."""

    model_config = ConfigDict(json_schema_extra={"examples": [CASE_AUDIT_CREATE_EXAMPLE]})

    child: ChildRef
    audited_work: AuditedWork = Field(description="What the panel audited")
    neglect_featured: StrictBool = Field(description="Neglect featured in the case")
    audited_on: Annotated[IsoDate, AfterValidator(not_in_future())] = Field(
        description="The day the panel graded the case (not in the future)"
    )
    panel_agencies: UniqueList[AgencyType] = Field(
        min_length=1, max_length=len(AgencyType), description="The kinds of agency on the panel"
    )
    practice_grade: AuditGrade = Field(description="The panel's grading of the practice")
    impact_grade: AuditGrade = Field(description="The panel's grading of the impact on the child")
    toolkit_used: StrictBool = Field(description="The neglect toolkit was used in the work audited")
    toolkit_use_effective: StrictBool | None = Field(
        default=None,
        description="Whether its use was judged effective: required when the toolkit was used, "
        "null when it was not",
    )
    learning: LongText | None = Field(default=None, description="What the panel learned")

    @model_validator(mode="after")
    def _effective_only_when_used(self) -> Self:
        if self.toolkit_used and self.toolkit_use_effective is None:
            raise ValueError("toolkit_use_effective: required when toolkit_used is true")
        if not self.toolkit_used and self.toolkit_use_effective is not None:
            raise ValueError("toolkit_use_effective: must be null when toolkit_used is false")
        return self


class CaseAuditPublic(PublicModel):
    """A recorded audit. The agency is the recording client's registered agency."""

    id: UUID
    child_id: UUID
    agency_type: str
    agency_name: str
    audited_work: AuditedWork
    neglect_featured: bool
    audited_on: date
    panel_agencies: list[str]
    practice_grade: str
    impact_grade: str
    toolkit_used: bool
    toolkit_use_effective: bool | None
    learning: str | None
    created_at: datetime
