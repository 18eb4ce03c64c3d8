"""Multi-agency case audits (SPEC 2.8)."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Boolean, CheckConstraint, Column, Date, ForeignKey, Index, String, Text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlmodel import Field, SQLModel

from .base import now_column, record_key_column, uuid_pk


class CaseAudit(SQLModel, table=True):
    """One panel's grading of the work with one child. Grades are stored as sent: the scale is
    configuration, so it is checked at the edge rather than by a constraint."""

    __tablename__ = "case_audit"
    __table_args__ = (
        Index("ix_case_audit_agency_name_audited_on", "agency_name", "audited_on"),
        Index("ix_case_audit_child_id", "child_id"),
        Index("ix_case_audit_audited_on", "audited_on"),
        CheckConstraint(
            "audited_work IN ('early_help_assessment', 'child_in_need_plan', "
            "'child_protection_plan')",
            name="audited_work",
        ),
        CheckConstraint(
            "(toolkit_use_effective IS NULL) = (NOT toolkit_used)",
            name="effective_only_when_used",
        ),
    )

    id: uuid.UUID = uuid_pk()
    client_id: str = Field(sa_column=Column(String(64), nullable=False))
    agency_type: str = Field(sa_column=Column(String(50), nullable=False))
    agency_name: str = Field(sa_column=Column(String(200), nullable=False))
    child_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("child.id"), nullable=False)
    )
    audited_work: str = Field(sa_column=Column(String(30), nullable=False))
    neglect_featured: bool = Field(sa_column=Column(Boolean, nullable=False))
    audited_on: date = Field(sa_column=Column(Date, nullable=False))
    panel_agencies: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    practice_grade: str = Field(sa_column=Column(String(40), nullable=False))
    impact_grade: str = Field(sa_column=Column(String(40), nullable=False))
    toolkit_used: bool = Field(sa_column=Column(Boolean, nullable=False))
    toolkit_use_effective: bool | None = Field(
        default=None, sa_column=Column(Boolean, nullable=True)
    )
    learning: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime | None = Field(default=None, sa_column=now_column())
    record_key: int | None = record_key_column()
