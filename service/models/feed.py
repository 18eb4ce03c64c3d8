"""The BI feed: feed keys, and the snapshots an OData feed pages through."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

from .base import now_column as _now_column


class FeedKey(SQLModel, table=True):
    """A long-lived, read-only credential of a registered client for the aggregate routes (the
    OData feed and the indicators). Only the SHA-256 of the key is stored: the key is 256 random
    bits, so a fast hash is as safe as a slow one and costs nothing per request."""

    __tablename__ = "feed_key"

    key_id: str = Field(sa_column=Column(String(32), primary_key=True))
    client_id: str = Field(
        sa_column=Column(String(64), ForeignKey("api_client.client_id"), nullable=False, index=True)
    )
    name: str = Field(sa_column=Column(String(200), nullable=False))
    key_sha256: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    key_hint: str = Field(sa_column=Column(String(16), nullable=False))
    """The key's first characters, so a person can tell keys apart; never enough to use."""
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class FeedSnapshot(SQLModel, table=True):
    """The rows one OData query answered, frozen at its first page, so that every later page of
    it reads the same rows in the same order while new data arrives.

    UNLOGGED, like its points: a snapshot is disposable (it expires within an hour), and a crash
    that empties it only makes a client start its pull again."""

    __tablename__ = "feed_snapshot"
    __table_args__ = (
        Index("ix_feed_snapshot_created_at", "created_at"),
        {"prefixes": ["UNLOGGED"]},
    )

    snapshot_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    client_id: str = Field(sa_column=Column(String(64), nullable=False))
    query_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    suppressed: bool = Field(sa_column=Column(Boolean, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())


class FeedSnapshotPoint(SQLModel, table=True):
    """One indicator point of a snapshot: an indicator, a period and a breakdown cell, with the
    figures the JSON API gives for it. `position` is the point's place in the feed's own order."""

    __tablename__ = "feed_snapshot_point"
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    snapshot_id: uuid.UUID = Field(
        sa_column=Column(
            UUID(as_uuid=True),
            ForeignKey("feed_snapshot.snapshot_id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    position: int = Field(sa_column=Column(Integer, primary_key=True))
    point_id: str = Field(sa_column=Column(Text, nullable=False))
    indicator_id: str = Field(sa_column=Column(Text, nullable=False))
    indicator_title: str = Field(sa_column=Column(Text, nullable=False))
    unit: str = Field(sa_column=Column(Text, nullable=False))
    period: str = Field(sa_column=Column(Text, nullable=False))
    period_start: date = Field(sa_column=Column(Date, nullable=False))
    period_end: date = Field(sa_column=Column(Date, nullable=False))
    label: str = Field(sa_column=Column(Text, nullable=False))
    time_period: int = Field(sa_column=Column(Integer, nullable=False))
    time_identifier: str = Field(sa_column=Column(Text, nullable=False))
    breakdown: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    breakdown_group: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    numerator: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    denominator: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    value: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    suppressed: bool = Field(sa_column=Column(Boolean, nullable=False))
