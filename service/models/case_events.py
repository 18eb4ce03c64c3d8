"""Case events from the council's case system (SPEC 2.4) and the projections built from them.

`case_event` keeps every stored event as sent (one row per client `event_id`). The projections
(`care_plan`, `care_plan_category_change`, `section47_enquiry`, `icpc`) hold the same facts as typed
columns, so the consistency rules can be checked with indexed look-ups and enforced by
constraints, and so the indicators can be computed without reading JSON. Each projection row points
back at the event that made it.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Identity,
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


def _child_fk() -> Any:
    return Field(sa_column=Column(UUID(as_uuid=True), ForeignKey("child.id"), nullable=False))


def _event_fk(nullable: bool = False) -> Any:
    return Field(
        default=None if nullable else ...,
        sa_column=Column(UUID(as_uuid=True), ForeignKey("case_event.id"), nullable=nullable),
    )


class CaseEvent(SQLModel, table=True):
    """One stored case event; `details` holds the type-specific fields as validated."""

    __tablename__ = "case_event"
    __table_args__ = (
        UniqueConstraint("client_id", "event_id", name="uq_case_event_client_event_id"),
        # `event_type` included: indicators look up a child's events of one type from the index.
        Index(
            "ix_case_event_child_id_occurred_on",
            "child_id",
            "occurred_on",
            postgresql_include=["event_type"],
        ),
        # Indicators read one event type over a date range, `details` included so that the scan
        # never visits the table (details are small: no free text longer than 200 characters).
        Index(
            "ix_case_event_event_type_occurred_on",
            "event_type",
            "occurred_on",
            postgresql_include=["child_id", "details", "record_key"],
        ),
    )

    id: uuid.UUID = uuid_pk()
    client_id: str = Field(sa_column=Column(String(64), nullable=False))
    agency_type: str = Field(sa_column=Column(String(50), nullable=False))
    agency_name: str = Field(sa_column=Column(String(200), nullable=False))
    event_id: str = Field(sa_column=Column(String(100), nullable=False))
    payload_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    child_id: uuid.UUID = _child_fk()
    event_type: str = Field(sa_column=Column(String(40), nullable=False))
    occurred_on: date = Field(sa_column=Column(Date, nullable=False))
    details: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=now_column())
    # The CIN census file the event was imported from; NULL for an event sent to the API.
    census_import_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(UUID(as_uuid=True), ForeignKey("census_import.id"), nullable=True),
    )
    record_key: int | None = record_key_column()


class CarePlan(SQLModel, table=True):
    """A child protection (`cp`) or child in need (`cin`) plan, from its start and end events."""

    __tablename__ = "care_plan"
    __table_args__ = (
        UniqueConstraint(
            "child_id", "plan_type", "plan_ref", name="uq_care_plan_child_id_plan_type_plan_ref"
        ),
        # SPEC 5: at most one open child protection plan per child.
        Index(
            "uq_care_plan_one_open_cp_plan",
            "child_id",
            unique=True,
            postgresql_where=text("plan_type = 'cp' AND ended_on IS NULL"),
        ),
        Index("ix_care_plan_plan_type_started_on", "plan_type", "started_on"),
        CheckConstraint("plan_type IN ('cp', 'cin')", name="plan_type"),
        # SPEC 5: a plan cannot end before it starts, nor on the day it starts.
        CheckConstraint("ended_on IS NULL OR ended_on > started_on", name="ends_after_start"),
        CheckConstraint(
            "(plan_type = 'cp') = (initial_category IS NOT NULL)", name="cp_plan_has_category"
        ),
    )

    id: uuid.UUID = uuid_pk()
    child_id: uuid.UUID = _child_fk()
    plan_type: str = Field(sa_column=Column(String(3), nullable=False))
    plan_ref: str = Field(sa_column=Column(String(100), nullable=False))
    started_on: date = Field(sa_column=Column(Date, nullable=False))
    ended_on: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    initial_category: str | None = Field(default=None, sa_column=Column(String(3), nullable=True))
    latest_category: str | None = Field(default=None, sa_column=Column(String(3), nullable=True))
    domestic_abuse_focus: bool | None = Field(
        default=None, sa_column=Column(Boolean, nullable=True)
    )
    neglect: bool | None = Field(default=None, sa_column=Column(Boolean, nullable=True))
    started_event_id: uuid.UUID = _event_fk()
    ended_event_id: uuid.UUID | None = _event_fk(nullable=True)
    created_at: datetime | None = Field(default=None, sa_column=now_column())
    # The CIN census NumberOfPreviousCPP: child protection plans the child had before this one,
    # anywhere, including before the history held here. NULL when not recorded (the API).
    previous_cp_plans: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    record_key: int | None = record_key_column()


class CarePlanCategoryChange(SQLModel, table=True):
    """A change of a child protection plan's category of abuse, effective from `changed_on`."""

    __tablename__ = "care_plan_category_change"
    __table_args__ = (
        Index("ix_care_plan_category_change_care_plan_id_changed_on", "care_plan_id", "changed_on"),
    )

    # An increasing id orders two changes recorded for the same day: the later one wins.
    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    care_plan_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("care_plan.id"), nullable=False)
    )
    changed_on: date = Field(sa_column=Column(Date, nullable=False))
    category: str = Field(sa_column=Column(String(3), nullable=False))
    case_event_id: uuid.UUID = _event_fk()


class Section47Enquiry(SQLModel, table=True):
    """A Section 47 enquiry's start; ICPCs are matched to it by child and `enquiry_ref`."""

    __tablename__ = "section47_enquiry"
    __table_args__ = (
        UniqueConstraint(
            "child_id", "enquiry_ref", name="uq_section47_enquiry_child_id_enquiry_ref"
        ),
    )

    id: uuid.UUID = uuid_pk()
    child_id: uuid.UUID = _child_fk()
    enquiry_ref: str = Field(sa_column=Column(String(100), nullable=False))
    started_on: date = Field(sa_column=Column(Date, nullable=False))
    # NULL for an enquiry imported from the CIN census, which does not record the discussion.
    strategy_discussion_on: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    case_event_id: uuid.UUID = _event_fk()


class Icpc(SQLModel, table=True):
    """An initial child protection conference; at most one per Section 47 enquiry."""

    __tablename__ = "icpc"
    __table_args__ = (
        UniqueConstraint("child_id", "enquiry_ref", name="uq_icpc_child_id_enquiry_ref"),
        Index("ix_icpc_held_on", "held_on"),
    )

    id: uuid.UUID = uuid_pk()
    child_id: uuid.UUID = _child_fk()
    enquiry_ref: str = Field(sa_column=Column(String(100), nullable=False))
    held_on: date = Field(sa_column=Column(Date, nullable=False))
    outcome: str = Field(sa_column=Column(String(10), nullable=False))
    categories: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    case_event_id: uuid.UUID = _event_fk()
    record_key: int | None = record_key_column()
