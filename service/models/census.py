"""CIN census files imported (SPEC 2.9): the provenance every imported record points at."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Column, Date, DateTime, Integer, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from .base import now_column, uuid_pk


class CensusImport(SQLModel, table=True):
    """One Children in Need census file, identified by the SHA-256 of its bytes.

    Importing the same file again finds this row and adds nothing; every referral and case event
    an import stored carries the id of the file it came from.
    """

    __tablename__ = "census_import"
    __table_args__ = (UniqueConstraint("sha256", name="uq_census_import_sha256"),)

    id: uuid.UUID = uuid_pk()
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    file_name: str | None = Field(default=None, sa_column=Column(String(255), nullable=True))
    census_year: str = Field(sa_column=Column(String(7), nullable=False))
    la_code: str = Field(sa_column=Column(String(10), nullable=False))
    reference_date: date = Field(sa_column=Column(Date, nullable=False))
    children: int = Field(sa_column=Column(Integer, nullable=False))
    imported_by: str = Field(sa_column=Column(String(64), nullable=False))
    imported_at: datetime | None = Field(default=None, sa_column=now_column())
    # When the latest import of the file finished and how many of its children it imported (or
    # found up to date); NULL while a first import runs, or if it stopped part way.
    completed_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    children_imported: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
