"""Toolkit assessments: scored by the server against a published toolkit version, stored with
the version and sha256 they were scored with, and visible to the agency that made them (and to
the Front Door, `referrals:read:all`).

The child's age, which decides the age-banded items, is taken in whole years on `completed_on`
from the date of birth sent in the assessment's `child`, else the matched child's recorded date
of birth. A child recorded as unborn (an expected date of birth only), or born after
`completed_on`, is 0. With no date of birth at all the age is unknown and age-banded items are
optional, as the scoring engine defines.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any, Final

from sqlalchemy import ColumnElement, Row, select, text, true, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from schemas.assessments import (
    AreaOverridePublic,
    AssessmentCreate,
    AssessmentOutcome,
    AssessmentPublic,
    AssessmentSummary,
    AssessorPublic,
    ChildVoicePublic,
    DistanceTravelledPublic,
    ItemResponsePublic,
    LevelOfNeedPublic,
    ScorePublic,
    ScoreRequest,
    StrengthsPublic,
    TargetMetPublic,
    TargetPublic,
)
from schemas.common import Page, today_in_uk
from service.audit import record_access
from service.auth.caller import Caller
from service.auth.scopes import READ_ALL_REFERRALS
from service.children import ChildIdentity, age_in_years, resolve_child
from service.errors import FieldProblem, NotFound, Unprocessable, field_problem, problem_count
from service.models import Assessment
from service.pagination import Keyset, PageRequest
from service.scoring import ResponsesInvalid, ResponseValue, ScoreResult, score_assessment
from service.toolkits.definition import ToolkitDefinition
from service.toolkits.versions import definition_of, find_toolkit_version, get_toolkit_version
from service.webhooks.outbox import enqueue_event

RESOURCE_TYPE = "assessment"


class AssessmentRefused(Unprocessable):
    """Responses, overrides, targets or a previous assessment that do not fit; `errors` names
    each one."""

    problem = "assessment-does-not-fit-toolkit"
    title = "The assessment does not fit its toolkit"


def _refuse(problems: list[FieldProblem]) -> AssessmentRefused:
    return AssessmentRefused(
        f"{problem_count(problems)} with the assessment; see `errors`", problems
    )


# --- age ---------------------------------------------------------------------------------------


# The newest date of birth the caller's own agency gave for the child; the Front Door's
# (`:agency_name` NULL) is the child's own. A partner never learns an age from another's record.
_DATE_OF_BIRTH_KNOWN_TO = text(
    """
    SELECT date_of_birth, expected_date_of_birth FROM child
    WHERE id = :child_id AND CAST(:agency_name AS text) IS NULL
    UNION ALL
    SELECT * FROM (
        SELECT CAST(body -> 'child' ->> 'date_of_birth' AS date),
               CAST(body -> 'child' ->> 'expected_date_of_birth' AS date)
        FROM (
            SELECT body, received_at AS at FROM referral
            WHERE child_id = :child_id AND agency_name = :agency_name
            UNION ALL
            SELECT body, created_at FROM assessment
            WHERE child_id = :child_id AND agency_name = :agency_name
        ) own
        WHERE body -> 'child' ->> 'date_of_birth' IS NOT NULL
           OR body -> 'child' ->> 'expected_date_of_birth' IS NOT NULL
        ORDER BY at DESC LIMIT 1
    ) newest
    """
)


async def _child_age(
    session: AsyncSession,
    caller: Caller,
    child_id: uuid.UUID,
    sent_date_of_birth: date | None,
    on: date,
) -> int | None:
    if sent_date_of_birth is not None:
        return age_in_years(sent_date_of_birth, on)
    agency = None if caller.has(READ_ALL_REFERRALS) else caller.agency_name
    row = (
        await session.execute(
            _DATE_OF_BIRTH_KNOWN_TO, {"child_id": child_id, "agency_name": agency}
        )
    ).first()
    if row is None:
        return None
    if row.date_of_birth is not None:
        return age_in_years(row.date_of_birth, on)
    return 0 if row.expected_date_of_birth is not None else None


# --- visibility --------------------------------------------------------------------------------


def assessment_visible_to(caller: Caller) -> ColumnElement[bool]:
    """The condition on `assessment` rows a caller may see: its own agency's, or all with
    `referrals:read:all` (the Front Door)."""
    if caller.has(READ_ALL_REFERRALS):
        return true()
    return col(Assessment.agency_name) == caller.agency_name


async def _find_visible(
    session: AsyncSession, caller: Caller, assessment_id: uuid.UUID
) -> Assessment | None:
    found: Assessment | None = await session.scalar(
        select(Assessment).where(col(Assessment.id) == assessment_id, assessment_visible_to(caller))
    )
    return found


# --- scoring -----------------------------------------------------------------------------------

_PREVIOUS_FIELD = "body.previous_assessment_id"


async def _previous_assessment(
    session: AsyncSession,
    caller: Caller,
    previous_id: uuid.UUID | None,
    *,
    child_id: uuid.UUID | None,
    toolkit_id: str,
    completed_on: date,
    problems: list[FieldProblem],
) -> Assessment | None:
    """The earlier assessment a re-assessment builds on, or None with a problem recorded."""
    if previous_id is None:
        return None
    previous = await _find_visible(session, caller, previous_id)
    if previous is None:
        # Someone else's assessment reads exactly like a missing one.
        problems.append(
            field_problem(
                _PREVIOUS_FIELD,
                code="unknown_previous_assessment",
                message="no assessment you can see has this id",
            )
        )
        return None
    faults = []
    if child_id is not None and previous.child_id != child_id:
        faults.append(("different_child", "the previous assessment is of a different child"))
    if previous.toolkit_id != toolkit_id:
        faults.append(
            (
                "different_toolkit",
                f"the previous assessment used toolkit {previous.toolkit_id}, not {toolkit_id}",
            )
        )
    if previous.completed_on > completed_on:
        faults.append(
            ("previous_completed_later", "the previous assessment was completed after this one")
        )
    problems.extend(
        field_problem(_PREVIOUS_FIELD, code=code, message=message) for code, message in faults
    )
    return None if faults else previous


def _previous_targets(previous: Assessment) -> list[tuple[str, int]]:
    targets: list[dict[str, Any]] = previous.body.get("targets") or []
    return [(str(target["item_id"]), int(target["target_grade"])) for target in targets]


def _score(
    definition: ToolkitDefinition,
    body: AssessmentCreate | ScoreRequest,
    child_age_years: int | None,
    previous: Assessment | None,
    problems: list[FieldProblem],
) -> ScoreResult | None:
    responses: dict[str, ResponseValue] = {
        response.item_id: response.grade for response in body.responses
    }
    overrides = {override.area_id: override.grade for override in body.overrides}
    try:
        return score_assessment(
            definition,
            responses,
            child_age_years,
            overrides=overrides,
            previous=ScoreResult.model_validate(previous.result) if previous else None,
            previous_targets=_previous_targets(previous) if previous else (),
        )
    except ResponsesInvalid as exc:
        for found in exc.problems:
            if "item_id" in found:
                field = f"body.responses.{found['item_id']}"
            else:
                field = f"body.overrides.{found['area_id']}"
            problems.append(field_problem(field, code=found["code"], message=found["message"]))
        return None


def _check_targets(
    definition: ToolkitDefinition,
    body: AssessmentCreate,
    child_age_years: int | None,
    problems: list[FieldProblem],
) -> None:
    items = {item.id: item for _, _, item in definition.iter_items()}
    scale = definition.grade_scale
    for index, target in enumerate(body.targets):
        field = f"body.targets.{index}"
        item = items.get(target.item_id)
        if item is None:
            problems.append(
                field_problem(
                    f"{field}.item_id",
                    code="unknown_item",
                    message=(
                        f"item '{target.item_id}': not an item of toolkit {definition.id} "
                        f"{definition.version}"
                    ),
                )
            )
        elif child_age_years is not None and not item.covers_age(child_age_years):
            problems.append(
                field_problem(
                    f"{field}.item_id",
                    code="out_of_age_band",
                    message=(
                        f"item '{target.item_id}': a child aged {child_age_years} is outside the "
                        "item's age band"
                    ),
                )
            )
        if not scale.contains(target.target_grade):
            problems.append(
                field_problem(
                    f"{field}.target_grade",
                    code="out_of_scale",
                    message=(
                        f"target grade {target.target_grade} is outside the grade scale "
                        f"{scale.min_grade}-{scale.max_grade}"
                    ),
                )
            )


def _outcome(result: ScoreResult, strengths_text: str | None) -> AssessmentOutcome:
    level = result.level_of_need
    return AssessmentOutcome(
        item_grades=result.item_grades,
        sub_area_grades=result.sub_area_grades,
        computed_area_grades=result.computed_area_grades,
        area_grades=result.area_grades,
        overridden_area_ids=result.overridden_area_ids,
        neglect_form_profile=result.neglect_form_profile,
        highest_area_grade=result.highest_area_grade,
        areas_at_concern=result.areas_at_concern,
        areas_at_significant_concern=result.areas_at_significant_concern,
        level_of_need=LevelOfNeedPublic(
            level=level.level,
            name=level.name,
            recommended_action=level.recommended_action,
            refer_to_front_door=level.refer_to_front_door,
        ),
        strengths=StrengthsPublic(area_ids=result.strength_area_ids, text=strengths_text),
        insufficient_evidence_area_ids=result.insufficient_evidence_area_ids,
        insufficient_evidence_sub_area_ids=result.insufficient_evidence_sub_area_ids,
        not_applicable_area_ids=result.not_applicable_area_ids,
        not_applicable_sub_area_ids=result.not_applicable_sub_area_ids,
        distance_travelled=(
            DistanceTravelledPublic.model_validate(result.distance_travelled)
            if result.distance_travelled is not None
            else None
        ),
        targets_met=[TargetMetPublic.model_validate(target) for target in result.targets],
    )


def _to_public(assessment: Assessment) -> AssessmentPublic:
    # Built from the stored body with the lenient public types: the input checks depend on the day
    # (dates not in the future) and a stored assessment must stay readable after it has passed.
    body = assessment.body
    result = ScoreResult.model_validate(assessment.result)
    return AssessmentPublic(
        id=assessment.id,
        child_id=assessment.child_id,
        agency_type=assessment.agency_type,
        agency_name=assessment.agency_name,
        toolkit_id=assessment.toolkit_id,
        toolkit_version=assessment.toolkit_version,
        toolkit_sha256=assessment.toolkit_sha256,
        assessor=AssessorPublic.model_validate(body["assessor"]),
        started_on=assessment.started_on,
        completed_on=assessment.completed_on,
        child_age_years=assessment.child_age_years,
        responses=[ItemResponsePublic.model_validate(item) for item in body["responses"]],
        strengths=body.get("strengths"),
        child_voice=ChildVoicePublic.model_validate(body["child_voice"]),
        parent_carer_views=body.get("parent_carer_views"),
        overrides=[AreaOverridePublic.model_validate(item) for item in body.get("overrides", [])],
        targets=[TargetPublic.model_validate(item) for item in body.get("targets", [])],
        previous_assessment_id=assessment.previous_assessment_id,
        household_ref=assessment.household_ref,
        created_at=assessment.created_at,
        outcome=_outcome(result, body.get("strengths")),
    )


# --- operations --------------------------------------------------------------------------------


async def create_assessment(
    session: AsyncSession, caller: Caller, body: AssessmentCreate
) -> AssessmentPublic:
    """Score and store an assessment for the child it names (matched, or created).

    Raises `AssessmentRefused` naming every response, override, target or previous assessment
    that does not fit the toolkit version.
    """
    toolkit = await find_toolkit_version(session, body.toolkit_id, body.toolkit_version)
    if toolkit is None:
        raise _refuse(
            [
                field_problem(
                    "body.toolkit_version",
                    code="unknown_toolkit_version",
                    message=(
                        f"no toolkit {body.toolkit_id} version {body.toolkit_version} is published"
                    ),
                )
            ]
        )
    definition = definition_of(toolkit)
    ref = body.child
    child_id = await resolve_child(
        session,
        ChildIdentity.from_ref(ref),
    )
    child_age_years = await _child_age(
        session, caller, child_id, ref.date_of_birth, body.completed_on
    )
    problems: list[FieldProblem] = []
    previous = await _previous_assessment(
        session,
        caller,
        body.previous_assessment_id,
        child_id=child_id,
        toolkit_id=body.toolkit_id,
        completed_on=body.completed_on,
        problems=problems,
    )
    result = _score(definition, body, child_age_years, previous, problems)
    _check_targets(definition, body, child_age_years, problems)
    if problems or result is None:
        raise _refuse(problems)

    assessment = Assessment.model_validate(
        {
            "client_id": caller.client_id,
            "agency_type": caller.agency_type,
            "agency_name": caller.agency_name,
            "child_id": child_id,
            "toolkit_id": toolkit.toolkit_id,
            "toolkit_version": toolkit.version,
            "toolkit_sha256": toolkit.sha256,
            "started_on": body.started_on,
            "completed_on": body.completed_on,
            "child_age_years": child_age_years,
            "household_ref": body.household_ref,
            "previous_assessment_id": previous.id if previous else None,
            "highest_area_grade": result.highest_area_grade,
            "areas_at_concern": result.areas_at_concern,
            "areas_at_significant_concern": result.areas_at_significant_concern,
            "level_of_need": result.level_of_need.level,
            "body": body.model_dump(mode="json"),
            "result": result.model_dump(mode="json"),
        }
    )
    session.add(assessment)
    await session.flush()
    # Before the audit events, which lock the agency's audit chain head until the commit.
    await enqueue_event(
        session,
        "assessment.completed",
        agency_name=caller.agency_name,
        resource_id=assessment.id,
        status="completed",
    )
    if previous is not None:
        await record_access(session, caller, "read", RESOURCE_TYPE, previous.id, previous.child_id)
    await record_access(session, caller, "create", RESOURCE_TYPE, assessment.id, child_id)
    return _to_public(assessment)


async def read_assessment(
    session: AsyncSession, caller: Caller, assessment_id: uuid.UUID
) -> AssessmentPublic:
    """One assessment the caller may see; another agency's is `NotFound`, like a missing one."""
    assessment = await _find_visible(session, caller, assessment_id)
    if assessment is None:
        raise NotFound("no such assessment", resource_type=RESOURCE_TYPE, resource_id=assessment_id)
    await record_access(session, caller, "read", RESOURCE_TYPE, assessment.id, assessment.child_id)
    return _to_public(assessment)


# A child the caller may list assessments of: any child for the Front Door (`:agency_name`
# NULL), else one its own agency has referred or assessed (another's is like a missing one).
_CHILD_KNOWN_TO = text(
    """
    SELECT EXISTS (SELECT 1 FROM child WHERE id = :child_id AND CAST(:agency_name AS text) IS NULL)
        OR EXISTS (SELECT 1 FROM referral WHERE child_id = :child_id AND agency_name = :agency_name)
        OR EXISTS (
            SELECT 1 FROM assessment WHERE child_id = :child_id AND agency_name = :agency_name
        )
    """
)

_KEYSET: Final = Keyset[tuple[uuid.UUID]](tuple[uuid.UUID])
"""The trajectory pages after the assessment with this id."""

_TRAJECTORY_ORDER = (
    col(Assessment.completed_on),
    col(Assessment.created_at),
    col(Assessment.id),
)


async def list_child_assessments(
    session: AsyncSession,
    caller: Caller,
    child_id: uuid.UUID,
    page: PageRequest,
) -> Page[AssessmentSummary]:
    """The child's assessments the caller may see, oldest first, one page at a time (an empty
    page after a cursor naming none of the child's assessments)."""
    after = _KEYSET.after(page)
    agency = None if caller.has(READ_ALL_REFERRALS) else caller.agency_name
    if not await session.scalar(_CHILD_KNOWN_TO, {"child_id": child_id, "agency_name": agency}):
        raise NotFound("no such child", resource_type="child", resource_id=child_id)
    columns = (
        col(Assessment.id),
        col(Assessment.child_id),
        col(Assessment.agency_name),
        col(Assessment.toolkit_id),
        col(Assessment.toolkit_version),
        col(Assessment.toolkit_sha256),
        col(Assessment.completed_on),
        col(Assessment.child_age_years),
        col(Assessment.previous_assessment_id),
        col(Assessment.household_ref),
        col(Assessment.result),
    )
    query = (
        select(*columns)
        .where(col(Assessment.child_id) == child_id, assessment_visible_to(caller))
        .order_by(*_TRAJECTORY_ORDER)
        .limit(page.fetch)
    )
    if after is not None:
        last = (
            await session.execute(
                select(*_TRAJECTORY_ORDER).where(
                    col(Assessment.id) == after[0], col(Assessment.child_id) == child_id
                )
            )
        ).one_or_none()
        if last is None:
            # Assessments are never deleted, so only a cursor we never issued names nothing.
            return Page[AssessmentSummary](items=[])
        query = query.where(tuple_(*_TRAJECTORY_ORDER) > tuple_(*last))
    rows = (await session.execute(query)).all()
    await record_access(session, caller, "list", RESOURCE_TYPE, None, child_id)
    return _KEYSET.page(rows, page, lambda row: (row.id,), _summary)


def _summary(row: Row[Any]) -> AssessmentSummary:
    outcome = _outcome(ScoreResult.model_validate(row.result), None)
    return AssessmentSummary(
        id=row.id,
        child_id=row.child_id,
        agency_name=row.agency_name,
        toolkit_id=row.toolkit_id,
        toolkit_version=row.toolkit_version,
        toolkit_sha256=row.toolkit_sha256,
        completed_on=row.completed_on,
        child_age_years=row.child_age_years,
        previous_assessment_id=row.previous_assessment_id,
        household_ref=row.household_ref,
        area_grades=outcome.area_grades,
        neglect_form_profile=outcome.neglect_form_profile,
        highest_area_grade=outcome.highest_area_grade,
        areas_at_concern=outcome.areas_at_concern,
        areas_at_significant_concern=outcome.areas_at_significant_concern,
        level_of_need=outcome.level_of_need,
        distance_travelled=outcome.distance_travelled,
    )


async def score_without_storing(
    session: AsyncSession, caller: Caller, toolkit_id: str, version: str, body: ScoreRequest
) -> ScorePublic:
    """Score responses against a published version and store nothing (a dry run).

    A `previous_assessment_id` must be one the caller can see, with the same toolkit id; its
    reading is audited, since its grades show through the distance travelled.
    """
    toolkit = await get_toolkit_version(session, toolkit_id, version)
    definition = definition_of(toolkit)
    completed_on = body.completed_on or today_in_uk()
    child_age_years = (
        age_in_years(body.child_date_of_birth, completed_on)
        if body.child_date_of_birth is not None
        else None
    )
    problems: list[FieldProblem] = []
    previous = await _previous_assessment(
        session,
        caller,
        body.previous_assessment_id,
        child_id=None,
        toolkit_id=toolkit.toolkit_id,
        completed_on=completed_on,
        problems=problems,
    )
    result = _score(definition, body, child_age_years, previous, problems)
    if problems or result is None:
        raise _refuse(problems)
    if previous is not None:
        await record_access(session, caller, "read", RESOURCE_TYPE, previous.id, previous.child_id)
    return ScorePublic(
        toolkit_id=toolkit.toolkit_id,
        toolkit_version=toolkit.version,
        toolkit_sha256=toolkit.sha256,
        child_age_years=child_age_years,
        outcome=_outcome(result, body.strengths),
    )
