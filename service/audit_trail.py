"""Reading the audit trail (`audit:read`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import AuditEvent


async def list_audit_events(
    session: AsyncSession,
    *,
    limit: int,
    after_id: int | None = None,
    child_id: uuid.UUID | None = None,
    client_id: str | None = None,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
) -> Sequence[AuditEvent]:
    """Oldest first, keyset-paginated on the identity column."""
    query = select(AuditEvent).order_by(AuditEvent.id).limit(limit)  # type: ignore[arg-type]
    if after_id is not None:
        query = query.where(AuditEvent.id > after_id)  # type: ignore[operator]
    if child_id is not None:
        query = query.where(AuditEvent.child_id == child_id)
    if client_id is not None:
        query = query.where(AuditEvent.client_id == client_id)
    if occurred_from is not None:
        query = query.where(AuditEvent.occurred_at >= occurred_from)  # type: ignore[operator]
    if occurred_to is not None:
        query = query.where(AuditEvent.occurred_at < occurred_to)  # type: ignore[operator]
    return (await session.scalars(query)).all()
