"""The case-audit wire contract: the grading scale is configuration, checked when it is read."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas.case_audits import (
    AUDIT_GRADES,
    GOOD_OR_BETTER_GRADES,
    AuditGradeScale,
    CaseAuditCreate,
)
from tests.builders.case_audits import case_audit_body


def test_the_shipped_scale_is_the_four_point_scale_with_two_grades_good_or_better() -> None:
    assert AUDIT_GRADES == ("outstanding", "good", "requires_improvement", "inadequate")
    assert GOOD_OR_BETTER_GRADES == ("outstanding", "good")


def grades(*flags: bool) -> dict[str, Any]:
    return {
        "grades": [
            {"id": f"grade_{index}", "label": f"Grade {index}", "good_or_better": flag}
            for index, flag in enumerate(flags)
        ]
    }


@pytest.mark.parametrize(
    "flags",
    [(True, False, True), (False, True), (True, True), (False, False)],
    ids=["good below a poor grade", "best grade not good", "all good", "none good"],
)
def test_a_scale_whose_good_grades_are_not_a_leading_run_is_refused(
    flags: tuple[bool, ...],
) -> None:
    with pytest.raises(ValidationError, match="leading run"):
        AuditGradeScale.model_validate(grades(*flags))


def test_a_scale_repeating_a_grade_is_refused() -> None:
    document = grades(True, False)
    document["grades"][1]["id"] = "grade_0"

    with pytest.raises(ValidationError, match="repeat"):
        AuditGradeScale.model_validate(document)


def test_an_audit_graded_off_the_scale_is_refused() -> None:
    with pytest.raises(ValidationError, match="must be one of the audit grades"):
        CaseAuditCreate.model_validate(case_audit_body(impact_grade="satisfactory"))
