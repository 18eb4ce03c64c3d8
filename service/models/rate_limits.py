"""Rate-limit counters shared by every process and replica of the service."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Integer, Text
from sqlmodel import Field, SQLModel


class RateLimitCounter(SQLModel, table=True):
    """One fixed window of one limit: hits so far, and when the window ends.

    UNLOGGED: a counter is worth less than the WAL it would write on every request, and losing
    the counters in a crash only restarts the current windows.
    """

    __tablename__ = "rate_limit_counter"
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    key: str = Field(sa_column=Column(Text, primary_key=True))
    hits: int = Field(sa_column=Column(Integer, nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
