"""The audit trail: every create, read, list and export of personal data calls `record_access`;
`audit:read` callers page through it with `list_audit_events`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from schemas.audit import AuditEventPublic
from schemas.common import Page
from service.auth.caller import Caller
from service.db import DriverPool, driver_function_call, function_call
from service.models import AuditEvent
from service.pagination import Keyset, PageRequest

AuditAction = Literal["create", "read", "list", "export", "update", "denied"]


_RECORD_ARGUMENTS: Final = (
    "client_id",
    "agency_type",
    "agency_name",
    "action",
    "resource_type",
    "resource_id",
    "child_id",
    "request_id",
    "access_reason",
)
# The database function `neglect_record_audit` (audit.sql), which `neglect_create_referral` calls
# too: one definition of what an audit event holds.
_RECORD = function_call("neglect_record_audit", _RECORD_ARGUMENTS)


def _event(
    caller: Caller,
    action: AuditAction,
    resource_type: str,
    resource_id: object,
    child_id: uuid.UUID | None,
    denied_reason: str | None = None,
) -> dict[str, Any]:
    """`neglect_record_audit`'s arguments by name: one description of what an event holds."""
    return {
        "client_id": caller.client_id,
        "agency_type": caller.agency_type,
        "agency_name": caller.agency_name,
        "action": action,
        "resource_type": resource_type,
        "resource_id": str(resource_id) if resource_id is not None else None,
        "child_id": child_id,
        "request_id": caller.request_id,
        "access_reason": caller.access_reason,
        "denied_reason": denied_reason,
    }


async def record_access(
    session: AsyncSession,
    caller: Caller,
    action: AuditAction,
    resource_type: str,
    resource_id: uuid.UUID | str | None = None,
    child_id: uuid.UUID | None = None,
) -> None:
    """Append one audit event in the caller's transaction: it lands with the change or not."""
    await session.execute(_RECORD, _event(caller, action, resource_type, resource_id, child_id))


def _uuid_or_none(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value is not None else None
    except ValueError:
        return None


async def record_replay(
    session: AsyncSession, caller: Caller, resource_type: str, stored_body: Mapping[str, Any]
) -> None:
    """Audit a replayed stored answer as a read of the record it names (its `id`, `child_id`)."""
    stored_id = stored_body.get("id")
    await record_access(
        session,
        caller,
        "read",
        resource_type,
        stored_id if isinstance(stored_id, str) else None,
        child_id=_uuid_or_none(stored_body.get("child_id")),
    )


_KEYSET: Final = Keyset[tuple[int]](tuple[Annotated[int, Field(ge=0, le=2**63 - 1)]])
"""Oldest first: a page starts after the identity (a bigint) of the last one before."""


async def list_audit_events(
    session: AsyncSession,
    page: PageRequest,
    *,
    child_id: uuid.UUID | None = None,
    client_id: str | None = None,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
) -> Page[AuditEventPublic]:
    """Oldest first, keyset-paginated on the identity column."""
    query = select(AuditEvent).order_by(col(AuditEvent.id)).limit(page.fetch)
    after = _KEYSET.after(page)
    if after is not None:
        query = query.where(col(AuditEvent.id) > after[0])
    if child_id is not None:
        query = query.where(col(AuditEvent.child_id) == child_id)
    if client_id is not None:
        query = query.where(col(AuditEvent.client_id) == client_id)
    if occurred_from is not None:
        query = query.where(col(AuditEvent.occurred_at) >= occurred_from)
    if occurred_to is not None:
        query = query.where(col(AuditEvent.occurred_at) < occurred_to)
    events = [AuditEventPublic.model_validate(event) for event in await session.scalars(query)]
    return _KEYSET.page(events, page, lambda event: (event.id,), lambda event: event)


_RECORD_DENIED_ARGUMENTS: Final = (*_RECORD_ARGUMENTS, "denied_reason")
_RECORD_DENIED = driver_function_call("neglect_record_audit", _RECORD_DENIED_ARGUMENTS)


async def record_denied(
    pool: DriverPool,
    caller: Caller,
    resource_type: str,
    resource_id: object,
    reason: str,
) -> None:
    """Append a `denied` event for a refused access, in its own transaction: the request's own
    transaction is rolled back with the refusal, and the attempt must stay on the trail."""
    # The id asked for is the caller's text: at most what the column holds.
    asked_for = None if resource_id is None else str(resource_id)[:64]
    event = _event(caller, "denied", resource_type, asked_for, None, reason)
    async with pool.acquire() as connection:
        await connection.execute(
            _RECORD_DENIED, *(event[name] for name in _RECORD_DENIED_ARGUMENTS)
        )
