"""The audit trail on the wire."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import Field

from .common import PublicModel


class AuditEventPublic(PublicModel):
    id: int
    occurred_at: datetime
    client_id: str
    agency_type: str
    agency_name: str
    action: str
    resource_type: str
    resource_id: str | None
    child_id: UUID | None
    request_id: str | None
    access_reason: str | None
    denied_reason: str | None = Field(
        default=None, description="Why access was refused, on a `denied` event"
    )
