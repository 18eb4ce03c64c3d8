"""Children: identity plus the records about them the caller may see (SPEC 2.1)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Security

from schemas.children import ChildWithTimeline
from service.auth.caller import Caller
from service.children import get_child_timeline

from .deps import SessionDep, authenticate
from .responses import problems

router = APIRouter(prefix="/v1", tags=["children"])

Reader = Annotated[Caller, Security(authenticate, scopes=["referrals:read"])]


@router.get("/children/{child_id}", responses=problems(401, 403, 404, 422, 503))
async def get_child(child_id: uuid.UUID, session: SessionDep, caller: Reader) -> ChildWithTimeline:
    """A child and the timeline of referrals, assessments and case events this client may see."""
    return await get_child_timeline(session, caller, child_id)
