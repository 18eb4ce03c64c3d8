"""API clients: the registered machine callers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Column, DateTime, String, Text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel

from .base import now_column as _now_column


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
