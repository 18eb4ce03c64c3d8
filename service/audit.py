"""The audit trail. Every create, read, list and export of personal data calls `record_access`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.caller import Caller

AuditAction = Literal["create", "read", "list", "export", "update"]


_INSERT = text(
    "INSERT INTO audit_event (client_id, agency_type, agency_name, action, resource_type, "
    "resource_id, child_id, request_id, access_reason) VALUES (:client_id, :agency_type, "
    ":agency_name, :action, :resource_type, :resource_id, :child_id, :request_id, :access_reason)"
)


async def record_access(
    session: AsyncSession,
    caller: Caller,
    action: AuditAction,
    resource_type: str,
    resource_id: uuid.UUID | str | None = None,
    child_id: uuid.UUID | None = None,
) -> None:
    """Append one audit event in the caller's transaction: it lands with the change or not."""
    await session.execute(
        _INSERT,
        {
            "client_id": caller.client_id,
            "agency_type": caller.agency_type,
            "agency_name": caller.agency_name,
            "action": action,
            "resource_type": resource_type,
            "resource_id": str(resource_id) if resource_id is not None else None,
            "child_id": child_id,
            "request_id": caller.request_id,
            "access_reason": caller.access_reason,
        },
    )


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
