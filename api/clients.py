"""Client registry (scope `admin`) and the audit trail (scope `audit:read`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Security

from schemas.clients import AuditEventPublic, ClientCreate, ClientCreated, ClientPublic
from schemas.common import IsoDateTime, Page
from service.audit_trail import list_audit_events
from service.auth import clients as registry
from service.auth.caller import Caller
from service.errors import Unprocessable

from .deps import AdminDep, PageDep, SessionDep, authenticate
from .responses import problems

router = APIRouter(prefix="/v1", tags=["administration"])

AuditReader = Annotated[Caller, Security(authenticate, scopes=["audit:read"])]


@router.post("/clients", status_code=201, responses=problems(401, 403, 409, 422))
async def create_client(body: ClientCreate, session: SessionDep, caller: AdminDep) -> ClientCreated:
    """Register a machine client; its secret is shown once, in this response only."""
    if body.client_id and not body.issuer:
        raise Unprocessable("client_id can only be chosen for an external issuer's client")
    created = await registry.create_client(
        session,
        name=body.name,
        agency_type=body.agency_type,
        agency_name=body.agency_name,
        scopes=list(body.scopes),
        issuer=body.issuer,
        client_id=body.client_id,
    )
    public = ClientPublic.model_validate(created.client)
    return ClientCreated(**public.model_dump(), client_secret=created.secret)


@router.get("/clients", responses=problems(401, 403))
async def list_clients(session: SessionDep, caller: AdminDep) -> list[ClientPublic]:
    """Every registered client."""
    return [ClientPublic.model_validate(client) for client in await registry.list_clients(session)]


@router.post("/clients/{client_id}/disable", responses=problems(401, 403, 404))
async def disable_client(
    client_id: Annotated[str, Path(max_length=64)], session: SessionDep, caller: AdminDep
) -> ClientPublic:
    """Disable a client: its tokens are refused from the next request on."""
    return ClientPublic.model_validate(await registry.disable_client(session, client_id))


@router.get("/audit-events", responses=problems(401, 403, 422))
async def list_audit(
    session: SessionDep,
    caller: AuditReader,
    page: PageDep,
    child_id: uuid.UUID | None = None,
    client_id: Annotated[str | None, Query(max_length=64)] = None,
    occurred_from: IsoDateTime | None = None,
    occurred_to: IsoDateTime | None = None,
) -> Page[AuditEventPublic]:
    """The audit trail, oldest first."""
    after_id = None
    if page.cursor is not None:
        if not page.cursor.isdigit() or len(page.cursor) > 18:
            raise Unprocessable("the cursor is not one this service issued")
        after_id = int(page.cursor)
    events = await list_audit_events(
        session,
        limit=page.limit + 1,
        after_id=after_id,
        child_id=child_id,
        client_id=client_id,
        occurred_from=occurred_from,
        occurred_to=occurred_to,
    )
    items = [AuditEventPublic.model_validate(event) for event in events[: page.limit]]
    next_cursor = str(items[-1].id) if len(events) > page.limit and items else None
    return Page[AuditEventPublic](items=items, next_cursor=next_cursor)
