"""The indicator rollup (`service.indicators.rollup`): every series' cells as the live SQL last
computed them, the state of that computation, and the transactions that may have changed a
figure since."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    Identity,
    Integer,
    Numeric,
    SmallInteger,
    Text,
)
from sqlmodel import Field, SQLModel


class IndicatorCell(SQLModel, table=True):
    """One row of one series as `build_series_sql` returned it over the whole covered history:
    `position` is the row's place in that output, whose order a narrower range keeps. `breakdown`
    is '' without one; `grp` NULL is the period's total; `seen` says the group had units in the
    period (a group that is not fixed is shown in a range when seen in some period of it)."""

    __tablename__ = "indicator_cell"

    indicator_id: str = Field(sa_column=Column(Text, primary_key=True))
    period: str = Field(sa_column=Column(Text, primary_key=True))
    breakdown: str = Field(sa_column=Column(Text, primary_key=True))
    period_start: date = Field(sa_column=Column(Date, primary_key=True))
    position: int = Field(sa_column=Column(Integer, primary_key=True))
    period_end: date = Field(sa_column=Column(Date, nullable=False))
    grp: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    seen: bool = Field(sa_column=Column(Boolean, nullable=False))
    num: int = Field(sa_column=Column(BigInteger, nullable=False))
    den: int = Field(sa_column=Column(BigInteger, nullable=False))
    nkey: int = Field(sa_column=Column(BigInteger, nullable=False))
    dkey: int = Field(sa_column=Column(BigInteger, nullable=False))
    value: Decimal | None = Field(default=None, sa_column=Column(Numeric, nullable=True))


class IndicatorRollup(SQLModel, table=True):
    """The one row saying what the cells hold: the snapshot they were computed in (text of a
    `pg_snapshot`), when (`figures_as_of`), the days they cover, until when they stay right
    without any write (`valid_until`: a figure that reads now() changes then), and the hash of
    the series definitions they were computed with."""

    __tablename__ = "indicator_rollup"
    __table_args__ = (CheckConstraint("singleton = 1", name="singleton"),)

    singleton: int = Field(sa_column=Column(SmallInteger, primary_key=True))
    snapshot: str = Field(sa_column=Column(Text, nullable=False))
    figures_as_of: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    valid_until: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    covered_from: date = Field(sa_column=Column(Date, nullable=False))
    covered_to: date = Field(sa_column=Column(Date, nullable=False))
    definition_sha256: str = Field(sa_column=Column(Text, nullable=False))
    refresh_seconds: float = Field(sa_column=Column(Float, nullable=False))


class IndicatorChange(SQLModel, table=True):
    """A transaction that wrote to a table some indicator reads (`xid`, its full transaction id
    as a bigint), noted once per transaction by a statement trigger. Rolled back with it."""

    __tablename__ = "indicator_change"

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    xid: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
