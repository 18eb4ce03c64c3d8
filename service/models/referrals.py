"""Requests for Support (referrals) to the Children's Front Door."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlmodel import Field, SQLModel

from .base import now_column, record_key_column, uuid_pk

RECORDED_DISABILITIES: Final = (
    "jsonb_typeof(body -> 'child' -> 'disabilities') = 'array' "
    "AND body -> 'child' -> 'disabilities' <> '[]'::jsonb"
)
"""The referral recorded its child's disabilities (a non-empty array): the indicators' disability
breakdown reads the child's latest such referral. Both the predicate of the index below and the
breakdown's look-up (`service.indicators.sql`), which uses that index only when its condition is
this one. Compared with '[]' rather than measured, it cannot fail on a value that is not an
array, whichever half runs first (an index predicate runs on every insert)."""


class Referral(SQLModel, table=True):
    """One referral about one child. Queried columns are columns; the rest of the body is JSONB."""

    __tablename__ = "referral"
    __table_args__ = (
        UniqueConstraint(
            "client_id", "external_reference", name="uq_referral_client_external_reference"
        ),
        # The child's referrals in order: re-referral counts on create, and the indicators'
        # previous-referral window and look-ups, read from the index alone.
        Index(
            "ix_referral_child_id_received_at_id",
            "child_id",
            "received_at",
            "id",
            postgresql_include=["status", "referral_source", "agency_type"],
        ),
        # Only the referrals that recorded disabilities: the disability breakdown's look-up of a
        # child's latest one reads one entry and one body instead of each referral's body in
        # turn.
        Index(
            "ix_referral_child_id_received_at_disabilities",
            "child_id",
            "received_at",
            "id",
            postgresql_where=text(RECORDED_DISABILITIES),
        ),
        # Indicator series scan the referrals received in a range from this index alone, the
        # record keys of disclosure control included.
        Index(
            "ix_referral_received_at_indicators",
            "received_at",
            postgresql_include=[
                "status",
                "child_id",
                "concern_categories",
                "neglect_forms",
                "referral_source",
                "agency_type",
                "decided_at",
                "decision_due_at",
                "previous_received_at",
                "record_key",
            ],
        ),
        Index("ix_referral_agency_name_received_at", "agency_name", "received_at"),
        Index("ix_referral_status_decision_due_at", "status", "decision_due_at"),
        # What only a live referral carries: a referral imported from the CIN census leaves these
        # empty (NULL), since the census does not record them.
        CheckConstraint(
            "census_import_id IS NOT NULL OR (urgent IS NOT NULL AND decision_due_at IS NOT NULL "
            "AND concern_categories IS NOT NULL AND neglect_forms IS NOT NULL "
            "AND risk_factors IS NOT NULL AND vulnerabilities IS NOT NULL "
            "AND parents_informed IS NOT NULL AND parental_consent IS NOT NULL)",
            name="live_referral_complete",
        ),
    )

    id: uuid.UUID = uuid_pk()
    client_id: str = Field(sa_column=Column(String(64), nullable=False))
    agency_type: str = Field(sa_column=Column(String(50), nullable=False))
    agency_name: str = Field(sa_column=Column(String(200), nullable=False))
    external_reference: str = Field(sa_column=Column(String(100), nullable=False))
    child_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("child.id"), nullable=False)
    )
    status: str = Field(sa_column=Column(String(20), nullable=False))
    urgent: bool | None = Field(default=None, sa_column=Column(Boolean, nullable=True))
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    decision_due_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    referral_source: str = Field(sa_column=Column(String(4), nullable=False))
    concern_categories: list[str] | None = Field(
        default=None, sa_column=Column(ARRAY(Text), nullable=True)
    )
    neglect_forms: list[str] | None = Field(
        default=None, sa_column=Column(ARRAY(Text), nullable=True)
    )
    risk_factors: list[str] | None = Field(
        default=None, sa_column=Column(ARRAY(Text), nullable=True)
    )
    vulnerabilities: list[str] | None = Field(
        default=None, sa_column=Column(ARRAY(Text), nullable=True)
    )
    parents_informed: bool | None = Field(default=None, sa_column=Column(Boolean, nullable=True))
    parental_consent: str | None = Field(default=None, sa_column=Column(String(20), nullable=True))
    rereferral: bool = Field(sa_column=Column(Boolean, nullable=False))
    rereferral_count: int = Field(sa_column=Column(Integer, nullable=False))
    # The same count over the sending agency's own referrals of the child: the re-referral context
    # a partner may see (`rereferral_count` is the Front Door's).
    agency_rereferral_count: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )
    # When the child's latest earlier non-withdrawn referral was received (None: there is none),
    # kept current on create and withdraw so the re-referral indicator needs no window over the
    # child's referrals.
    previous_received_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    body: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    decision_outcome: str | None = Field(default=None, sa_column=Column(String(60), nullable=True))
    decision: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    decided_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    strategy_discussion_due_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    withdrawn_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    withdrawal_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime | None = Field(default=None, sa_column=now_column())
    # The CIN census file this referral was imported from (the latest that described it); NULL
    # for a referral sent to the API.
    census_import_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(UUID(as_uuid=True), ForeignKey("census_import.id"), nullable=True),
    )
    record_key: int | None = record_key_column()
