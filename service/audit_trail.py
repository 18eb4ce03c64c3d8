"""Reading the audit trail (`audit:read`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

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
    query = select(AuditEvent).order_by(col(AuditEvent.id)).limit(limit)
    if after_id is not None:
        query = query.where(col(AuditEvent.id) > after_id)
    if child_id is not None:
        query = query.where(col(AuditEvent.child_id) == child_id)
    if client_id is not None:
        query = query.where(col(AuditEvent.client_id) == client_id)
    if occurred_from is not None:
        query = query.where(col(AuditEvent.occurred_at) >= occurred_from)
    if occurred_to is not None:
        query = query.where(col(AuditEvent.occurred_at) < occurred_to)
    return (await session.scalars(query)).all()
