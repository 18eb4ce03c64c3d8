"""The transactional outbox: an event is written in the transaction of the change it reports.

One database function, `neglect_enqueue_webhook` (outbox.sql), writes it: one row, nothing else;
`neglect_create_referral` calls it inside its own statement, and the other changes call it here,
in their session's transaction. Workers then fan each event out to the subscriptions entitled to
it (`neglect_fan_out_webhooks`, service/webhooks/worker.py).
"""

from __future__ import annotations

import uuid
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.webhooks import EventType
from service.db import function_call

_ENQUEUE: Final = function_call(
    "neglect_enqueue_webhook", ("event_type", "agency_name", "resource_id", "status")
)


async def enqueue_event(
    session: AsyncSession,
    event_type: EventType,
    *,
    agency_name: str,
    resource_id: uuid.UUID,
    status: str,
) -> str:
    """Write one event for the agency it concerns; returns its id (its `webhook-id`)."""
    message_id = await session.scalar(
        _ENQUEUE,
        {
            "event_type": event_type,
            "agency_name": agency_name,
            "resource_id": resource_id,
            "status": status,
        },
    )
    return str(message_id)
