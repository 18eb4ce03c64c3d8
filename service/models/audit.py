"""The audit trail of every access to personal data."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Column, Identity, Index, String, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

from .base import now_column as _now_column


class AuditEvent(SQLModel, table=True):
    """Append-only trail of every access to personal data; a trigger refuses UPDATE and DELETE."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_child_id_occurred_at", "child_id", "occurred_at"),
        Index("ix_audit_event_occurred_at", "occurred_at"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=True), primary_key=True),
    )
    occurred_at: datetime | None = Field(default=None, sa_column=_now_column())
    client_id: str = Field(sa_column=Column(String(64), nullable=False))
    agency_type: str = Field(sa_column=Column(String(50), nullable=False))
    agency_name: str = Field(sa_column=Column(String(200), nullable=False))
    action: str = Field(sa_column=Column(String(20), nullable=False))
    resource_type: str = Field(sa_column=Column(String(50), nullable=False))
    resource_id: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    child_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(UUID(as_uuid=True), nullable=True)
    )
    request_id: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    access_reason: str | None = Field(default=None, sa_column=Column(String(500), nullable=True))
    denied_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    """Why access was refused, on a `denied` event."""
