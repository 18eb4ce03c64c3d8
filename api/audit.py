"""The audit trail (scope `audit:read`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Security

from schemas.audit import AuditEventPublic
from schemas.common import IsoDateTime, Page
from service.audit import list_audit_events
from service.auth.caller import Caller

from .deps import DATA_LAG_DOC, PageDep, ReadSessionDep, authenticate
from .responses import problems

router = APIRouter(prefix="/v1", tags=["administration"])

AuditReader = Annotated[Caller, Security(authenticate, scopes=["audit:read"])]


@router.get(
    "/audit-events", responses={**problems(401, 403, 422, 503), 200: {"headers": DATA_LAG_DOC}}
)
async def list_audit(
    session: ReadSessionDep,
    caller: AuditReader,
    page: PageDep,
    child_id: uuid.UUID | None = None,
    client_id: Annotated[str | None, Query(max_length=64)] = None,
    occurred_from: IsoDateTime | None = None,
    occurred_to: IsoDateTime | None = None,
) -> Page[AuditEventPublic]:
    """The audit trail, oldest first; read on the read replica when one is configured, so the
    newest events may be missing for as long as `X-Data-Lag-Seconds` says."""
    return await list_audit_events(
        session,
        page,
        child_id=child_id,
        client_id=client_id,
        occurred_from=occurred_from,
        occurred_to=occurred_to,
    )
