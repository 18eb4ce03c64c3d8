"""Foundation tables: API clients, signing keys, the audit trail, idempotency records."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlmodel import Field, SQLModel

from .base import now_column as _now_column
from .base import uuid_pk as _uuid_pk


class ApiClient(SQLModel, table=True):
    """A registered machine caller. Its agency comes from here, never from a request body."""

    __tablename__ = "api_client"

    client_id: str = Field(sa_column=Column(String(64), primary_key=True))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    agency_type: str = Field(sa_column=Column(String(50), nullable=False))
    agency_name: str = Field(sa_column=Column(String(200), nullable=False))
    allowed_scopes: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    # NULL for clients whose tokens come from an external identity provider.
    secret_hash: str | None = Field(default=None, sa_column=Column(String(300), nullable=True))
    issuer: str | None = Field(default=None, sa_column=Column(String(300), nullable=True))
    enabled: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default="true")
    )
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    disabled_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class SigningKey(SQLModel, table=True):
    """The built-in issuer's key pairs, shared by every replica through the database."""

    __tablename__ = "signing_key"

    kid: str = Field(sa_column=Column(String(64), primary_key=True))
    algorithm: str = Field(sa_column=Column(String(10), nullable=False))
    private_pem: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    public_jwk: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    retired_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


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
