"""Webhooks: subscriptions, the outbox of events, their deliveries and every attempt made.

An event is written to `webhook_message` in the same transaction as the change it reports
(`neglect_enqueue_webhook`, service/webhooks/outbox.sql): that one row is all the outbox adds to
the change. Workers fan each event out, one `webhook_delivery` per subscription entitled to it
(`neglect_fan_out_webhooks`), then claim due deliveries and record each attempt.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlmodel import Field, SQLModel

from .base import now_column, uuid_pk


class WebhookSubscription(SQLModel, table=True):
    """A client's endpoint for some event types. Its signing secrets are stored encrypted under
    the key-encryption key (`service.auth.key_encryption`); during a rotation the previous one
    signs too, until `previous_secret_expires_at`."""

    __tablename__ = "webhook_subscription"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'disabled', 'deleted')", name="status"),
        Index("ix_webhook_subscription_client_id_created_at", "client_id", "created_at", "id"),
    )

    id: uuid.UUID = uuid_pk()
    client_id: str = Field(
        sa_column=Column(String(64), ForeignKey("api_client.client_id"), nullable=False)
    )
    url: str = Field(sa_column=Column(String(2000), nullable=False))
    event_types: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    description: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    status: str = Field(
        default="active", sa_column=Column(String(20), nullable=False, server_default="active")
    )
    disabled_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    kek_id: str = Field(sa_column=Column(String(32), nullable=False))
    secret_enc: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    previous_secret_enc: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True)
    )
    previous_secret_expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime | None = Field(default=None, sa_column=now_column())
    secret_rotated_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    disabled_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class WebhookMessage(SQLModel, table=True):
    """One event, as sent: `body` holds the exact bytes every attempt signs and sends, and `id`
    is its `webhook-id`, the same across retries and replays. `agency_name` is the agency the
    event concerns (the referring or assessing one), which decides who may receive it."""

    __tablename__ = "webhook_message"
    __table_args__ = (Index("ix_webhook_message_occurred_at", "occurred_at"),)

    id: str = Field(sa_column=Column(String(40), primary_key=True))
    event_type: str = Field(sa_column=Column(String(64), nullable=False))
    agency_name: str = Field(sa_column=Column(String(200), nullable=False))
    occurred_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))


class WebhookFanOut(SQLModel, table=True):
    """An event no worker has yet fanned out to its subscriptions: written with the event, deleted
    by the worker that makes its deliveries (`neglect_fan_out_webhooks`). A queue apart from the
    events, so that the events stay as written and the queue stays a few pages, which autovacuum
    keeps clean (migration 0018 makes it vacuum after every thousand rows taken): a marker on the
    event itself would leave a dead entry per event in an index that every fan-out scans, until a
    vacuum of the whole, growing, event table."""

    __tablename__ = "webhook_fan_out"

    message_id: str = Field(sa_column=Column(String(40), primary_key=True))


class WebhookDelivery(SQLModel, table=True):
    """One event to one subscription. `pending` until a 2xx (`succeeded`), the last retry
    (`dead`: the dead letter, which a replay makes pending again) or the subscription's end
    (`cancelled`). A worker claims a pending one by moving `next_attempt_at` past its lease and
    writing its `lease`; a worker that dies leaves it to be claimed again when the lease ends."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'succeeded', 'dead', 'cancelled')", name="status"),
        UniqueConstraint("message_id", "subscription_id", name="uq_webhook_delivery_message"),
        Index(
            "ix_webhook_delivery_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_delivery_subscription_id_id", "subscription_id", "id"),
        # `/health/ready` counts the deliveries dead-lettered in the last day: a partnership's
        # alert that referrers are not hearing back. Dead letters are few, so this stays small.
        Index(
            "ix_webhook_delivery_dead_finished_at",
            "finished_at",
            postgresql_where=text("status = 'dead'"),
        ),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    # No foreign keys on these two (migration 0016: each check locked the referenced row, when
    # the referral create still wrote its deliveries). What they guarded cannot happen:
    # deliveries are written only by `neglect_fan_out_webhooks` and `neglect_replay_webhooks`
    # (events and subscriptions they have just read), and the runtime role may delete neither
    # events nor subscriptions (`service.db_roles.NARROW_GRANTS`; a subscription ends by its
    # status).
    message_id: str = Field(sa_column=Column(String(40), nullable=False))
    subscription_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    status: str = Field(
        default="pending", sa_column=Column(String(20), nullable=False, server_default="pending")
    )
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    """Attempts since it was last made pending (created or replayed): the retry schedule's
    position."""
    next_attempt_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    lease: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    created_at: datetime | None = Field(default=None, sa_column=now_column())
    finished_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class WebhookAttempt(SQLModel, table=True):
    """One attempt to send a delivery: when, what came back. Never the body."""

    __tablename__ = "webhook_attempt"
    __table_args__ = (Index("ix_webhook_attempt_delivery_id", "delivery_id", "id"),)

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    delivery_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("webhook_delivery.id"), nullable=False)
    )
    attempted_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    webhook_timestamp: int = Field(sa_column=Column(BigInteger, nullable=False))
    outcome: str = Field(sa_column=Column(String(20), nullable=False))
    http_status: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    duration_ms: int = Field(sa_column=Column(Integer, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(String(300), nullable=True))
    worker_id: str = Field(sa_column=Column(String(100), nullable=False))


class WebhookWorker(SQLModel, table=True):
    """A delivery worker's heartbeat, for `/health/ready`."""

    __tablename__ = "webhook_worker"

    worker_id: str = Field(sa_column=Column(String(100), primary_key=True))
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    heartbeat_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    stopped_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    succeeded: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    failed: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
