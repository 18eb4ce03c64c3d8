"""Toolkit assessments: sent by practitioners' systems, scored by the service, read back by the
agency that made them (and the Front Door)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Security
from fastapi.responses import Response

from schemas.assessments import AssessmentCreate, AssessmentPublic, AssessmentSummary
from schemas.common import Page
from service.assessments import (
    RESOURCE_TYPE,
    create_assessment,
    list_child_assessments,
    read_assessment,
)
from service.auth.caller import Caller

from .deps import IdempotencyKeyDep, PageDep, SessionDep, authenticate
from .idempotency import create_idempotently
from .responses import problems

router = APIRouter(prefix="/v1", tags=["assessments"])

AssessmentWriter = Annotated[Caller, Security(authenticate, scopes=["assessments:write"])]
AssessmentReader = Annotated[Caller, Security(authenticate, scopes=["assessments:read"])]


@router.post(
    "/assessments",
    status_code=201,
    response_model=AssessmentPublic,
    responses=problems(400, 401, 403, 409, 413, 422),
)
async def post_assessment(
    body: AssessmentCreate,
    session: SessionDep,
    caller: AssessmentWriter,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    """Score and store a toolkit assessment of one child.

    Every item in the child's age band needs a response (`not_known` when it could not be
    judged) and items outside it must have none; each fault is a 422 naming the item. A
    re-assessment (`previous_assessment_id`) adds distance travelled and whether the earlier
    targets were met.
    """
    return await create_idempotently(
        session,
        caller,
        idempotency_key,
        "create_assessment",
        body,
        lambda: create_assessment(session, caller, body),
        RESOURCE_TYPE,
        location=lambda created: f"/v1/assessments/{created['id']}",
    )


@router.get("/assessments/{assessment_id}", responses=problems(401, 403, 404, 422))
async def get_assessment(
    assessment_id: uuid.UUID, session: SessionDep, caller: AssessmentReader
) -> AssessmentPublic:
    """One assessment made by the caller's agency (any, with `referrals:read:all`)."""
    return await read_assessment(session, caller, assessment_id)


@router.get("/children/{child_id}/assessments", responses=problems(401, 403, 404, 422))
async def list_assessments_of_child(
    child_id: uuid.UUID,
    session: SessionDep,
    caller: AssessmentReader,
    page: PageDep,
) -> Page[AssessmentSummary]:
    """The child's assessment trajectory that the caller may see, oldest first."""
    return await list_child_assessments(session, caller, child_id, page)
