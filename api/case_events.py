"""Routes for case events from the council's case-management system (SPEC 2.4)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Security

from api.deps import SessionDep, authenticate
from api.responses import problems
from schemas.case_events import CaseEventBatchIn, CaseEventBatchResult
from service.auth.caller import Caller
from service.case_events import record_case_events

router = APIRouter(prefix="/v1", tags=["case-events"])

CaseEventsWriter = Annotated[Caller, Security(authenticate, scopes=["case-events:write"])]


@router.post(
    "/case-events",
    response_model=CaseEventBatchResult,
    responses=problems(401, 403, 413, 422, 503),
)
async def post_case_events(
    batch: CaseEventBatchIn, session: SessionDep, caller: CaseEventsWriter
) -> CaseEventBatchResult:
    """Record up to 1,000 case events. Each is stored, reported as a duplicate of an event sent
    before under the same `event_id`, or rejected with its reason; a rejected event does not stop
    the others. Events are applied in batch order, so send a plan's start before its end."""
    return await record_case_events(session, caller, batch.events)
