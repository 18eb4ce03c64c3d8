"""The audit trail of every access to personal data, hash-chained per agency."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Identity,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

from .base import now_column as _now_column


class AuditEvent(SQLModel, table=True):
    """Append-only trail of every access to personal data; a trigger refuses UPDATE and DELETE.

    Each row is a link of its agency's hash chain (`service.audit_chain`): the BEFORE INSERT
    trigger `neglect_audit_chain_append` (service/audit.sql) sets `chain_seq`, `prev_hash` and
    `row_hash` whatever the INSERT says, so an edited, deleted or reordered row breaks the chain.
    """

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_child_id_occurred_at", "child_id", "occurred_at"),
        Index("ix_audit_event_occurred_at", "occurred_at"),
        # One link per position: also the order `audit verify` walks a chain in.
        UniqueConstraint("agency_name", "chain_seq", name="uq_audit_event_agency_chain_seq"),
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
    # Set by the chain trigger; None only on an object not yet inserted.
    chain_seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=False))
    prev_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=False))
    row_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=False))


class AuditChainHead(SQLModel, table=True):
    """The last link of each agency's audit chain. Only the chain trigger (SECURITY DEFINER,
    owned by the migrating role) writes it; the runtime role holds no privilege on it.

    `audit verify` prints the heads: a head copied outside the database ("anchored") shows later
    whether the chain up to it was rewritten, which a superuser could otherwise do unseen.
    """

    __tablename__ = "audit_chain_head"

    agency_name: str = Field(sa_column=Column(String(200), primary_key=True))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
