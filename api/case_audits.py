"""Multi-agency case audits (SPEC 2.8): recorded and read back by the agency that ran them."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Security
from fastapi.responses import Response

from schemas.case_audits import CaseAuditCreate, CaseAuditPublic
from schemas.common import IsoDate, Page
from service.auth.caller import Caller
from service.case_audits import (
    RESOURCE_TYPE,
    CaseAuditFilters,
    create_case_audit,
    list_case_audits,
    read_case_audit,
)

from .deps import IdempotencyKeyDep, PageDep, SessionDep, authenticate
from .idempotency import create_idempotently
from .responses import problems

router = APIRouter(prefix="/v1", tags=["case-audits"])

AuditWriter = Annotated[Caller, Security(authenticate, scopes=["audits:write"])]
AuditReader = Annotated[Caller, Security(authenticate, scopes=["audits:read"])]


@router.post(
    "/case-audits",
    status_code=201,
    response_model=CaseAuditPublic,
    responses=problems(400, 401, 403, 409, 413, 422, 503),
)
async def post_case_audit(
    body: CaseAuditCreate,
    session: SessionDep,
    caller: AuditWriter,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    """Record a multi-agency audit of the work with one child; a same-key retry replays the
    answer. `toolkit_use_effective` is required when the toolkit was used, null otherwise."""
    return await create_idempotently(
        session,
        caller,
        idempotency_key,
        "create_case_audit",
        body,
        lambda: create_case_audit(session, caller, body),
        RESOURCE_TYPE,
        location=lambda created: f"/v1/case-audits/{created['id']}",
    )


@router.get("/case-audits", responses=problems(401, 403, 422, 503))
async def get_case_audits(
    session: SessionDep,
    caller: AuditReader,
    page: PageDep,
    child_id: uuid.UUID | None = None,
    audited_from: Annotated[
        IsoDate | None, Query(description="Audited on or after this day")
    ] = None,
    audited_to: Annotated[
        IsoDate | None, Query(description="Audited on or before this day")
    ] = None,
) -> Page[CaseAuditPublic]:
    """The audits this client's agency recorded, newest audit day first."""
    filters = CaseAuditFilters(child_id=child_id, audited_from=audited_from, audited_to=audited_to)
    return await list_case_audits(session, caller, filters, page)


@router.get("/case-audits/{audit_id}", responses=problems(401, 403, 404, 422, 503))
async def get_case_audit(
    audit_id: uuid.UUID, session: SessionDep, caller: AuditReader
) -> CaseAuditPublic:
    """One audit this client's agency recorded; another agency's is 404."""
    return await read_case_audit(session, caller, audit_id)
