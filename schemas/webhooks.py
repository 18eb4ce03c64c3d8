"""Webhook subscriptions, their deliveries and replays on the wire (SPEC 2.7, Standard Webhooks
v1.0.0)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator

from .common import NUL_FREE, Instant, PublicModel, ShortText, StrictModel
from .examples import WEBHOOK_CREATE_EXAMPLE, WEBHOOK_REPLAY_EXAMPLE, WEBHOOK_ROTATE_EXAMPLE
from .vocabulary import UniqueList

EventType = Literal[
    "referral.received",
    "referral.decided",
    "referral.withdrawn",
    "assessment.completed",
]
"""Every event type a subscription may ask for."""

EVENT_TYPES: Final[dict[str, str]] = {
    "referral.received": "A referral reached the Front Door (to the Front Door's subscriptions)",
    "referral.decided": "The Front Door decided a referral (to the referring agency's)",
    "referral.withdrawn": "The referring agency withdrew a referral (to that agency's)",
    "assessment.completed": "A toolkit assessment was stored (to the assessing agency's)",
}

SubscriptionStatus = Literal["active", "disabled"]
DeliveryStatus = Literal["pending", "succeeded", "dead", "cancelled"]
AttemptOutcome = Literal["succeeded", "failed", "throttled", "gone", "refused", "timeout", "error"]

MAX_GRACE_PERIOD_S: Final = 7 * 24 * 3600
DEFAULT_GRACE_PERIOD_S: Final = 24 * 3600
MAX_REPLAY: Final = 1000


def _http_url(value: str) -> str:
    if not (value.startswith("https://") or value.startswith("http://")):
        raise ValueError("must be an https URL")
    return value


WebhookUrl = Annotated[
    str,
    StringConstraints(min_length=10, max_length=2000, pattern=r"^[!-~]+$"),
    AfterValidator(_http_url),
    *NUL_FREE,
]

MessageId = Annotated[str, StringConstraints(pattern=r"^msg_[0-9a-f]{32}$")]
"""An event's id, its `webhook-id`."""


class WebhookCreate(StrictModel):
    """A subscription: where to send which events."""

    model_config = ConfigDict(json_schema_extra={"examples": [WEBHOOK_CREATE_EXAMPLE]})

    url: WebhookUrl = Field(
        description="https only; an address inside the partnership's network is refused"
    )
    event_types: UniqueList[EventType] = Field(
        min_length=1,
        max_length=len(EVENT_TYPES),
        description="; ".join(f"`{name}`: {text}" for name, text in EVENT_TYPES.items()),
    )
    description: ShortText | None = None


class SecretRotate(StrictModel):
    """How long the secret being replaced keeps signing beside the new one."""

    model_config = ConfigDict(json_schema_extra={"examples": [WEBHOOK_ROTATE_EXAMPLE]})

    grace_period_s: int = Field(
        default=DEFAULT_GRACE_PERIOD_S,
        ge=0,
        le=MAX_GRACE_PERIOD_S,
        description="Seconds during which deliveries carry a signature with the old secret too "
        "(0: none; at most 7 days)",
    )


class WebhookReplay(StrictModel):
    """Which past events to send again: one by id, or those that occurred in a time range."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                WEBHOOK_REPLAY_EXAMPLE,
                {"message_id": "msg_2b7f4e0c9d1a4f6e8b3c5d7e9f0a1b2c"},
                {"since": "2026-12-01T00:00:00Z", "dead_only": True},
            ]
        }
    )

    message_id: MessageId | None = Field(default=None, description="One event, by its id")
    since: Instant | None = Field(default=None, description="Events that occurred at or after")
    until: Instant | None = Field(default=None, description="Events that occurred before")
    dead_only: bool = Field(
        default=False, description="Only events whose delivery here is dead-lettered"
    )

    @model_validator(mode="after")
    def _one_selection(self) -> WebhookReplay:
        if self.message_id is None and self.since is None:
            raise ValueError("name a message_id, or a time range starting at since")
        if self.message_id is not None and (self.since is not None or self.until is not None):
            raise ValueError("name a message_id or a time range, not both")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError("until must be after since")
        return self


class WebhookPublic(PublicModel):
    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str | None
    status: SubscriptionStatus
    disabled_reason: str | None = Field(description="Why it stopped, e.g. the endpoint said 410")
    created_at: datetime | None
    secret_rotated_at: datetime | None
    previous_secret_expires_at: datetime | None = Field(
        description="Until when deliveries also carry a signature with the previous secret"
    )
    disabled_at: datetime | None


class WebhookSecretIssued(WebhookPublic):
    secret: str | None = Field(
        description="The signing secret (`whsec_` and base64), shown once, in this answer only; "
        "a replay of the create answers without it (rotate the secret if it was lost)"
    )


class WebhookAttemptPublic(PublicModel):
    attempted_at: datetime
    webhook_timestamp: int = Field(description="The `webhook-timestamp` header of the attempt")
    outcome: AttemptOutcome
    http_status: int | None
    duration_ms: int
    error: str | None = Field(description="What went wrong, when no 2xx came back")


class WebhookDeliveryPublic(PublicModel):
    """One event sent (or to be sent) to this subscription, with every attempt."""

    message_id: str = Field(description="The event's id: its `webhook-id` on every attempt")
    event_type: str
    occurred_at: datetime
    status: DeliveryStatus = Field(
        description="`dead`: every retry failed (replay it); `cancelled`: the subscription "
        "ended first"
    )
    next_attempt_at: datetime | None
    attempts: list[WebhookAttemptPublic]


class WorkerHealth(PublicModel):
    """The delivery workers, as `/health/ready` shows them."""

    alive: int = Field(description="Workers that sent a heartbeat lately")
    last_heartbeat_at: datetime | None
    deliveries_due: int = Field(description="Deliveries due and not yet sent")
    events_waiting: int = Field(
        description="Events no worker has yet fanned out to the subscriptions entitled to them"
    )
    deliveries_dead_last_day: int = Field(
        description="Deliveries dead-lettered in the last 24 hours: every retry failed, so a "
        "subscriber has not heard of the event (its owner can replay it)"
    )


class ReplayAccepted(PublicModel):
    replayed: int = Field(description="How many events were queued to be sent again")


__all__ = [
    "DEFAULT_GRACE_PERIOD_S",
    "EVENT_TYPES",
    "MAX_REPLAY",
    "AttemptOutcome",
    "DeliveryStatus",
    "EventType",
    "ReplayAccepted",
    "SecretRotate",
    "WebhookAttemptPublic",
    "WebhookCreate",
    "WebhookDeliveryPublic",
    "WebhookPublic",
    "WebhookReplay",
    "WebhookSecretIssued",
    "WorkerHealth",
]
