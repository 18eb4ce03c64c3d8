"""Stored first answers to idempotent creates."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlmodel import Field, SQLModel

from .base import now_column as _now_column
from .base import uuid_pk as _uuid_pk


class IdempotencyRecord(SQLModel, table=True):
    """The first response to a create, replayed for a retry with the same key and body."""

    __tablename__ = "idempotency_record"
    __table_args__ = (
        UniqueConstraint("client_id", "idempotency_key", name="uq_idempotency_record_client_key"),
        Index("ix_idempotency_record_created_at", "created_at"),
    )

    id: uuid.UUID = _uuid_pk()
    client_id: str = Field(sa_column=Column(String(64), nullable=False))
    idempotency_key: str = Field(sa_column=Column(String(200), nullable=False))
    operation: str = Field(sa_column=Column(String(100), nullable=False))
    request_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    response_status: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    response_body: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSONB, nullable=True)
    )
    resource_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(UUID(as_uuid=True), nullable=True)
    )
    """What a create made, when its response is rendered from the record rather than stored."""
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
