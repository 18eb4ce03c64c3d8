"""Webhook subscriptions (SPEC 2.7): a client subscribes its own endpoints, and sees, rotates,
deletes and replays only its own; anyone else's is `NotFound`, exactly like a missing one.

An event type is open to a client allowed the scope that reads the record it names
(`neglect_webhook_scope`, outbox.sql: the rule the outbox routes by too).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Table, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from schemas.common import Instant, Page
from schemas.webhooks import (
    MAX_REPLAY,
    DeliveryStatus,
    WebhookAttemptPublic,
    WebhookCreate,
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhookReplay,
)
from service.audit import record_access
from service.auth.caller import Caller
from service.auth.key_encryption import KeyEncryptionKey
from service.db import function_call
from service.errors import Conflict, NotFound, ValidationFailed, field_problem
from service.models import ApiClient, WebhookSubscription, metadata
from service.pagination import Keyset, PageRequest
from service.settings import Settings
from service.webhooks.egress import DestinationRefused, Resolver, check_url
from service.webhooks.signing import encrypt_secret, new_secret

RESOURCE_TYPE: Final = "webhook_subscription"
OPERATION: Final = "webhook.create"
"""The idempotency operation name of a subscription create."""

DELIVERY: Final[Table] = metadata.tables["webhook_delivery"]
MESSAGE: Final[Table] = metadata.tables["webhook_message"]
ATTEMPT: Final[Table] = metadata.tables["webhook_attempt"]

_SCOPES_OF = text(
    "SELECT event_type, neglect_webhook_scope(p_event_type => event_type) AS scope "
    "FROM unnest(CAST(:event_types AS text[])) AS event_type"
)
_END = function_call("neglect_end_webhook_subscription", ("subscription_id", "status", "reason"))
_REPLAY = function_call(
    "neglect_replay_webhooks",
    ("subscription_id", "message_id", "since", "until", "dead_only", "limit"),
)


class SubscriptionDisabled(Conflict):
    problem = "webhook-disabled"
    title = "The webhook subscription is disabled"


@dataclass(frozen=True)
class IssuedSecret:
    subscription: WebhookSubscription
    secret: str
    """Shown once; only its encryption is stored."""


async def _check_destination(url: str, settings: Settings, resolver: Resolver | None) -> None:
    try:
        await check_url(url, settings, resolver=resolver)
    except DestinationRefused as exc:
        raise ValidationFailed(
            f"body.url: {exc.reason}", [field_problem("body.url", exc.reason, "destination")]
        ) from exc


async def _check_event_types(session: AsyncSession, caller: Caller, event_types: list[str]) -> None:
    client = await session.get(ApiClient, caller.client_id)
    allowed = set(client.allowed_scopes) if client is not None else set()
    rows = (await session.execute(_SCOPES_OF, {"event_types": event_types})).all()
    problems = [
        field_problem(
            f"body.event_types[{index}]",
            f"{row.event_type} needs the scope {row.scope}, which this client is not allowed",
            "scope",
        )
        for index, row in enumerate(rows)
        if row.scope not in allowed
    ]
    if problems:
        raise ValidationFailed("this client may not receive every event type asked for", problems)


async def create_subscription(
    session: AsyncSession,
    caller: Caller,
    body: WebhookCreate,
    settings: Settings,
    kek: KeyEncryptionKey,
    *,
    resolver: Resolver | None = None,
) -> IssuedSecret:
    """Subscribe the caller's endpoint; the new secret is returned once. `resolver` looks up
    the URL's host (the system's resolver when None)."""
    await _check_destination(body.url, settings, resolver)
    await _check_event_types(session, caller, list(body.event_types))
    subscription_id = uuid.uuid4()
    secret = new_secret()
    subscription = WebhookSubscription.model_validate(
        {
            "id": subscription_id,
            "client_id": caller.client_id,
            "url": body.url,
            "event_types": list(body.event_types),
            "description": body.description,
            "kek_id": kek.kek_id,
            "secret_enc": encrypt_secret(kek, subscription_id, secret),
        }
    )
    session.add(subscription)
    await session.flush()
    await session.refresh(subscription)
    await record_access(session, caller, "create", RESOURCE_TYPE, subscription_id)
    return IssuedSecret(subscription, secret)


async def get_subscription(
    session: AsyncSession, caller: Caller, subscription_id: uuid.UUID, *, lock: bool = False
) -> WebhookSubscription:
    """The caller's own subscription (not deleted); `NotFound` for anyone else's."""
    query = select(WebhookSubscription).where(
        col(WebhookSubscription.id) == subscription_id,
        col(WebhookSubscription.client_id) == caller.client_id,
        col(WebhookSubscription.status) != "deleted",
    )
    if lock:
        query = query.with_for_update()
    found = (await session.scalars(query)).one_or_none()
    if found is None:
        raise NotFound(
            "no such webhook subscription",
            resource_type=RESOURCE_TYPE,
            resource_id=subscription_id,
        )
    return found


async def read_subscription(
    session: AsyncSession, caller: Caller, subscription_id: uuid.UUID
) -> WebhookSubscription:
    subscription = await get_subscription(session, caller, subscription_id)
    await record_access(session, caller, "read", RESOURCE_TYPE, subscription_id)
    return subscription


_KEYSET: Final = Keyset[tuple[datetime, uuid.UUID]](tuple[Instant, uuid.UUID])
"""Oldest first: a page starts after the (created_at, id) of the last one before."""


async def list_subscriptions(
    session: AsyncSession, caller: Caller, page: PageRequest
) -> Page[WebhookPublic]:
    """The caller's subscriptions, oldest first."""
    table = metadata.tables["webhook_subscription"]
    query = select(WebhookSubscription).where(
        table.c.client_id == caller.client_id, table.c.status != "deleted"
    )
    after = _KEYSET.after(page)
    if after is not None:
        query = query.where(tuple_(table.c.created_at, table.c.id) > tuple_(*after))
    query = query.order_by(table.c.created_at, table.c.id).limit(page.fetch)
    rows = list(await session.scalars(query))
    await record_access(session, caller, "list", RESOURCE_TYPE)
    return _KEYSET.page(
        rows,
        page,
        lambda row: (row.created_at or datetime.now(UTC), row.id),
        WebhookPublic.model_validate,
    )


async def delete_subscription(
    session: AsyncSession, caller: Caller, subscription_id: uuid.UUID
) -> None:
    """End the subscription: nothing more is sent to it, pending deliveries included."""
    await get_subscription(session, caller, subscription_id, lock=True)
    await session.execute(
        _END,
        {"subscription_id": subscription_id, "status": "deleted", "reason": "deleted by client"},
    )
    await record_access(session, caller, "update", RESOURCE_TYPE, subscription_id)


async def rotate_secret(
    session: AsyncSession,
    caller: Caller,
    subscription_id: uuid.UUID,
    grace_period_s: int,
    kek: KeyEncryptionKey,
) -> IssuedSecret:
    """A new secret, returned once; the one it replaces keeps signing beside it for the grace
    period (a receiver may switch over at any time within it)."""
    subscription = await get_subscription(session, caller, subscription_id, lock=True)
    now = datetime.now(UTC)
    secret = new_secret()
    keep_previous = grace_period_s > 0
    values: dict[str, Any] = {
        "kek_id": kek.kek_id,
        "secret_enc": encrypt_secret(kek, subscription_id, secret),
        "secret_rotated_at": now,
        "previous_secret_enc": subscription.secret_enc if keep_previous else None,
        "previous_secret_expires_at": (
            now + timedelta(seconds=grace_period_s) if keep_previous else None
        ),
    }
    if keep_previous and subscription.kek_id != kek.kek_id:
        # The previous secret was encrypted with another KEK: it cannot sign from here on.
        values["previous_secret_enc"] = None
        values["previous_secret_expires_at"] = None
    table = metadata.tables["webhook_subscription"]
    await session.execute(update(table).where(table.c.id == subscription_id).values(**values))
    await session.refresh(subscription)
    await record_access(session, caller, "update", RESOURCE_TYPE, subscription_id)
    return IssuedSecret(subscription, secret)


_DELIVERY_KEYSET: Final = Keyset[tuple[int]](tuple[int])
"""Newest first: a page starts below the id of the last delivery before."""


async def list_deliveries(
    session: AsyncSession,
    caller: Caller,
    subscription_id: uuid.UUID,
    page: PageRequest,
    status: DeliveryStatus | None = None,
) -> Page[WebhookDeliveryPublic]:
    """The subscription's deliveries, newest first, each with its attempts, oldest first."""
    await get_subscription(session, caller, subscription_id)
    query = (
        select(
            DELIVERY.c.id,
            DELIVERY.c.message_id,
            DELIVERY.c.status,
            DELIVERY.c.next_attempt_at,
            MESSAGE.c.event_type,
            MESSAGE.c.occurred_at,
        )
        .join(MESSAGE, MESSAGE.c.id == DELIVERY.c.message_id)
        .where(DELIVERY.c.subscription_id == subscription_id)
    )
    if status is not None:
        query = query.where(DELIVERY.c.status == status)
    after = _DELIVERY_KEYSET.after(page)
    if after is not None:
        query = query.where(DELIVERY.c.id < after[0])
    rows = list(
        (await session.execute(query.order_by(DELIVERY.c.id.desc()).limit(page.fetch))).mappings()
    )
    shown = [row["id"] for row in rows[: page.limit]]
    attempts: dict[int, list[WebhookAttemptPublic]] = {delivery: [] for delivery in shown}
    if shown:
        found = await session.execute(
            select(ATTEMPT).where(ATTEMPT.c.delivery_id.in_(shown)).order_by(ATTEMPT.c.id)
        )
        for attempt in found.mappings():
            attempts[attempt["delivery_id"]].append(WebhookAttemptPublic.model_validate(attempt))
    await record_access(session, caller, "list", "webhook_delivery", subscription_id)
    return _DELIVERY_KEYSET.page(
        rows,
        page,
        lambda row: (row["id"],),
        lambda row: WebhookDeliveryPublic(
            message_id=row["message_id"],
            event_type=row["event_type"],
            occurred_at=row["occurred_at"],
            status=row["status"],
            next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
            attempts=attempts[row["id"]],
        ),
    )


async def replay(
    session: AsyncSession, caller: Caller, subscription_id: uuid.UUID, body: WebhookReplay
) -> int:
    """Queue past events to be sent again with their own ids; returns how many."""
    subscription = await get_subscription(session, caller, subscription_id, lock=True)
    if subscription.status != "active":
        raise SubscriptionDisabled(
            f"the subscription is disabled ({subscription.disabled_reason}); subscribe again"
        )
    replayed = await session.scalar(
        _REPLAY,
        {
            "subscription_id": subscription_id,
            "message_id": body.message_id,
            "since": body.since,
            "until": body.until,
            "dead_only": body.dead_only,
            "limit": MAX_REPLAY,
        },
    )
    await record_access(session, caller, "update", RESOURCE_TYPE, subscription_id)
    return int(replayed or 0)


async def count_due(session: AsyncSession) -> int:
    """Deliveries due now and not yet sent, across every subscription (readiness detail)."""
    due = await session.scalar(
        select(func.count())
        .select_from(DELIVERY)
        .where(DELIVERY.c.status == "pending", DELIVERY.c.next_attempt_at <= func.now())
    )
    return int(due or 0)
