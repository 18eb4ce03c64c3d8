"""Assessments, scored against a published toolkit version (`toolkits.ToolkitVersion`)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import Column, Date, ForeignKey, Index, Integer, String
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlmodel import Field, SQLModel

from .base import now_column, record_key_column, uuid_pk


class Assessment(SQLModel, table=True):
    """A scored toolkit assessment: inputs and full score as JSONB, indicator inputs as columns."""

    __tablename__ = "assessment"
    __table_args__ = (
        Index("ix_assessment_child_id_completed_on", "child_id", "completed_on"),
        Index("ix_assessment_agency_name_completed_on", "agency_name", "completed_on"),
        # Indicator series read assessments completed in a range, and each child's assessments
        # with a toolkit in order, from these indexes alone.
        Index(
            "ix_assessment_completed_on_indicators",
            "completed_on",
            postgresql_include=[
                "child_id",
                "agency_type",
                "areas_at_concern",
                "created_at",
                "record_key",
            ],
        ),
        Index(
            "ix_assessment_child_id_toolkit_id_completed_on",
            "child_id",
            "toolkit_id",
            "completed_on",
            "created_at",
            postgresql_include=[
                "id",
                "highest_area_grade",
                "previous_assessment_id",
                "agency_type",
            ],
        ),
        Index("ix_assessment_household_ref", "household_ref"),
    )

    id: uuid.UUID = uuid_pk()
    client_id: str = Field(sa_column=Column(String(64), nullable=False))
    agency_type: str = Field(sa_column=Column(String(50), nullable=False))
    agency_name: str = Field(sa_column=Column(String(200), nullable=False))
    child_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("child.id"), nullable=False)
    )
    toolkit_id: str = Field(sa_column=Column(String(100), nullable=False))
    toolkit_version: str = Field(sa_column=Column(String(50), nullable=False))
    toolkit_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    started_on: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    completed_on: date = Field(sa_column=Column(Date, nullable=False))
    child_age_years: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    household_ref: str | None = Field(default=None, sa_column=Column(String(100), nullable=True))
    previous_assessment_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(UUID(as_uuid=True), ForeignKey("assessment.id"), nullable=True),
    )
    highest_area_grade: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    areas_at_concern: int = Field(sa_column=Column(Integer, nullable=False))
    areas_at_significant_concern: int = Field(sa_column=Column(Integer, nullable=False))
    level_of_need: int = Field(sa_column=Column(Integer, nullable=False))
    body: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    result: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=now_column())
    record_key: int | None = record_key_column()
