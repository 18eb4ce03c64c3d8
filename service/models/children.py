"""Children: matched on every referral, assessment and case event, never duplicated."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Column, Date, Index, String, text
from sqlmodel import Field, SQLModel

from .base import now_column, record_key_column, uuid_pk


class Child(SQLModel, table=True):
    """Identity only; what referrers wrote about the child stays with their referral."""

    __tablename__ = "child"
    __table_args__ = (
        # One child per strong identifier (partial: most children lack some of them).
        Index(
            "uq_child_nhs_number",
            "nhs_number",
            unique=True,
            postgresql_where=text("nhs_number IS NOT NULL"),
        ),
        Index(
            "uq_child_la_child_id",
            "la_child_id",
            unique=True,
            postgresql_where=text("la_child_id IS NOT NULL"),
        ),
        Index("uq_child_upn", "upn", unique=True, postgresql_where=text("upn IS NOT NULL")),
        Index("ix_child_family_name_key_date_of_birth", "family_name_key", "date_of_birth"),
    )

    id: uuid.UUID = uuid_pk()
    nhs_number: str | None = Field(default=None, sa_column=Column(String(10), nullable=True))
    la_child_id: str | None = Field(default=None, sa_column=Column(String(20), nullable=True))
    upn: str | None = Field(default=None, sa_column=Column(String(13), nullable=True))
    given_name: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    family_name: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    family_name_key: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    date_of_birth: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    expected_date_of_birth: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    sex: str | None = Field(default=None, sa_column=Column(String(1), nullable=True))
    ethnicity: str | None = Field(default=None, sa_column=Column(String(4), nullable=True))
    created_at: datetime | None = Field(default=None, sa_column=now_column())
    updated_at: datetime | None = Field(default=None, sa_column=now_column())
    record_key: int | None = record_key_column()
