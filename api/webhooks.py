"""Webhook subscriptions (scope `webhooks:manage`, SPEC 2.7): a client's own endpoints, the
deliveries made to them, secret rotation and replay. Deliveries follow Standard Webhooks v1.0.0."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Request, Security
from fastapi.responses import Response

from schemas.common import Page
from schemas.webhooks import (
    DeliveryStatus,
    ReplayAccepted,
    SecretRotate,
    WebhookCreate,
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhookReplay,
    WebhookSecretIssued,
)
from service.auth.caller import Caller
from service.auth.scopes import MANAGE_WEBHOOKS
from service.webhooks import subscriptions
from service.webhooks.subscriptions import IssuedSecret

from .deps import IdempotencyKeyDep, PageDep, SessionDep, authenticate
from .idempotency import create_idempotently
from .responses import problems

router = APIRouter(prefix="/v1", tags=["webhooks"])

Manager = Annotated[Caller, Security(authenticate, scopes=[MANAGE_WEBHOOKS])]


def _issued(issued: IssuedSecret) -> WebhookSecretIssued:
    public = WebhookPublic.model_validate(issued.subscription)
    return WebhookSecretIssued(**public.model_dump(), secret=issued.secret)


def _location(webhook_id: uuid.UUID | str) -> str:
    return f"/v1/webhooks/{webhook_id}"


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookSecretIssued,
    responses=problems(400, 401, 403, 409, 413, 422, 503),
)
async def create_webhook(
    body: WebhookCreate,
    request: Request,
    session: SessionDep,
    caller: Manager,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    """Subscribe an https endpoint to event types. The signing secret is in this answer only;
    a same-key retry replays the answer without it."""

    async def create() -> WebhookSecretIssued:
        return _issued(
            await subscriptions.create_subscription(
                session,
                caller,
                body,
                request.app.state.settings,
                request.app.state.kek,
                resolver=request.app.state.webhook_resolver,
            )
        )

    return await create_idempotently(
        session,
        caller,
        idempotency_key,
        subscriptions.OPERATION,
        body,
        create,
        subscriptions.RESOURCE_TYPE,
        location=lambda created: _location(created["id"]),
        # The secret is never stored in the clear, not even in the replayable answer.
        replayable=lambda issued: issued.model_copy(update={"secret": None}),
    )


@router.get("/webhooks", responses=problems(401, 403, 422, 503))
async def list_webhooks(session: SessionDep, caller: Manager, page: PageDep) -> Page[WebhookPublic]:
    """This client's subscriptions, oldest first."""
    return await subscriptions.list_subscriptions(session, caller, page)


@router.get("/webhooks/{webhook_id}", responses=problems(401, 403, 404, 422, 503))
async def get_webhook(webhook_id: uuid.UUID, session: SessionDep, caller: Manager) -> WebhookPublic:
    """One of this client's subscriptions; anyone else's is 404."""
    return WebhookPublic.model_validate(
        await subscriptions.read_subscription(session, caller, webhook_id)
    )


@router.delete(
    "/webhooks/{webhook_id}", status_code=204, responses=problems(401, 403, 404, 422, 503)
)
async def delete_webhook(webhook_id: uuid.UUID, session: SessionDep, caller: Manager) -> Response:
    """End a subscription: nothing more is sent to it, pending deliveries included."""
    await subscriptions.delete_subscription(session, caller, webhook_id)
    return Response(status_code=204)


@router.post(
    "/webhooks/{webhook_id}/rotate-secret", responses=problems(401, 403, 404, 413, 422, 503)
)
async def rotate_webhook_secret(
    webhook_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    caller: Manager,
    body: SecretRotate | None = None,
) -> WebhookSecretIssued:
    """A new signing secret, shown once. Deliveries carry a signature with the previous secret
    too until the grace period ends, so the receiver can switch at any moment within it."""
    rotate = body or SecretRotate()
    return _issued(
        await subscriptions.rotate_secret(
            session, caller, webhook_id, rotate.grace_period_s, request.app.state.kek
        )
    )


@router.get("/webhooks/{webhook_id}/deliveries", responses=problems(401, 403, 404, 422, 503))
async def list_webhook_deliveries(
    webhook_id: uuid.UUID,
    session: SessionDep,
    caller: Manager,
    page: PageDep,
    status: DeliveryStatus | None = None,
) -> Page[WebhookDeliveryPublic]:
    """Events sent (or to be sent) to this subscription, newest first, each with its attempts;
    `status=dead` lists the dead letters. An event is listed once a delivery worker has taken it
    up, within a poll interval of its occurring while a worker runs (`/health/ready` shows the
    workers)."""
    return await subscriptions.list_deliveries(session, caller, webhook_id, page, status)


@router.post(
    "/webhooks/{webhook_id}/replay",
    status_code=202,
    responses=problems(401, 403, 404, 409, 413, 422, 503),
)
async def replay_webhook(
    webhook_id: uuid.UUID, body: WebhookReplay, session: SessionDep, caller: Manager
) -> ReplayAccepted:
    """Send past events again (one by id, or a time range, at most 1,000), each with its own
    `webhook-id`, so a receiver's dedupe still holds. 409 when the subscription is disabled."""
    replayed = await subscriptions.replay(session, caller, webhook_id, body)
    return ReplayAccepted(replayed=replayed)
