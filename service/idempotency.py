"""Idempotent creates: the first response to a key is stored with the change and replayed after.

The claim is the database function `neglect_claim_key` (idempotency.sql), also called inside
`neglect_create_referral`: an `INSERT ... ON CONFLICT DO NOTHING` on (client, key) inside the
request's own transaction. A concurrent request with the same key blocks on the unique index until
the first commits, then finds the stored response and replays it; if the first rolls back, the
second proceeds as the first. No check-then-insert window exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import function_call
from service.errors import IdempotencyKeyInFlight, IdempotencyKeyMissing, IdempotencyKeyReused
from service.fingerprint import fingerprint

MAX_KEY_LENGTH = 200
KEY_REUSED = "this Idempotency-Key was used with a different request; use a new key"
KEY_IN_FLIGHT = "the first request with this key is still being processed"


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict[str, Any]


def body_fingerprint(operation: str, body: object) -> str:
    """The request fingerprint a key is claimed with: the same body sent to another operation
    under the same key is a different request."""
    return fingerprint(body, scope=operation)


def check_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise IdempotencyKeyMissing("send an Idempotency-Key header with every create")
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise IdempotencyKeyMissing(
            f"the Idempotency-Key must be at most {MAX_KEY_LENGTH} printable characters"
        )
    return key


_CLAIM_ARGUMENTS: Final = (
    "client_id",
    "idempotency_key",
    "operation",
    "fingerprint",
    "resource_id",
    "response_status",
)
_CLAIM = function_call("neglect_claim_key", _CLAIM_ARGUMENTS, record=True)
# Plain SQL: this runs on every create, and ORM-enabled statements cost a millisecond of CPU.
_STORE = text(
    "UPDATE idempotency_record SET response_status = :status, response_body = CAST(:body AS jsonb) "
    "WHERE client_id = :client_id AND idempotency_key = :key"
)


def raise_for_claim_outcome(outcome: str) -> None:
    """The error for a refusal `neglect_claim_key` answered, if `outcome` is one."""
    if outcome == "key_reused":
        raise IdempotencyKeyReused(KEY_REUSED)
    if outcome == "in_flight":
        raise IdempotencyKeyInFlight(KEY_IN_FLIGHT)
    if outcome == "purged":
        raise IdempotencyKeyInFlight("retry the request")


async def claim_key(
    session: AsyncSession, client_id: str, key: str, operation: str, fingerprint: str
) -> StoredResponse | None:
    """None when this request owns the key; the stored response when it is a retry."""
    claim = (
        await session.execute(
            _CLAIM,
            {
                "client_id": client_id,
                "idempotency_key": key,
                "operation": operation,
                "fingerprint": fingerprint,
                "resource_id": None,
                "response_status": None,
            },
        )
    ).one()
    raise_for_claim_outcome(claim.outcome)
    if claim.outcome == "claimed":
        return None
    body = claim.response_body
    return StoredResponse(
        status=claim.response_status, body=orjson.loads(body) if isinstance(body, str) else body
    )


async def store_response(
    session: AsyncSession, client_id: str, key: str, status: int, body_json: str
) -> None:
    """Store the answer (already serialised JSON) to replay for this key."""
    await session.execute(
        _STORE, {"client_id": client_id, "key": key, "status": status, "body": body_json}
    )


MIN_RETENTION_HOURS = 24


async def purge_expired(session: AsyncSession, older_than_hours: int) -> int:
    """Delete stored responses older than the given age (never younger than 24 hours)."""
    if older_than_hours < MIN_RETENTION_HOURS:
        raise ValueError(f"keys are kept at least {MIN_RETENTION_HOURS} hours")
    result = await session.execute(
        text(
            "DELETE FROM idempotency_record WHERE created_at < now() - make_interval(hours => :h)"
        ),
        {"h": older_than_hours},
    )
    return int(getattr(result, "rowcount", 0) or 0)
