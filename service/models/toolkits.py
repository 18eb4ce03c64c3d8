"""Published toolkit definitions: immutable versions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Column, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from .base import now_column, uuid_pk


class ToolkitVersion(SQLModel, table=True):
    """An immutable published toolkit definition (id + version), with its canonical sha256."""

    __tablename__ = "toolkit_version"
    __table_args__ = (
        UniqueConstraint("toolkit_id", "version", name="uq_toolkit_version_toolkit_id_version"),
    )

    id: uuid.UUID = uuid_pk()
    toolkit_id: str = Field(sa_column=Column(String(100), nullable=False))
    version: str = Field(sa_column=Column(String(50), nullable=False))
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    title: str = Field(sa_column=Column(String(300), nullable=False))
    publisher: str = Field(sa_column=Column(String(300), nullable=False))
    licence: str = Field(sa_column=Column(String(300), nullable=False))
    demonstration: bool = Field(sa_column=Column(Boolean, nullable=False))
    definition: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    published_by: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    published_at: datetime | None = Field(default=None, sa_column=now_column())
