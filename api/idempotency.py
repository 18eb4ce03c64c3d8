"""Idempotent creates for routes that require `Idempotency-Key` (SPEC 3)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import record_replay
from service.auth.caller import Caller
from service.idempotency import body_fingerprint, check_key, claim_key, store_response


async def create_idempotently(
    session: AsyncSession,
    caller: Caller,
    key: str | None,
    operation: str,
    body: BaseModel,
    create: Callable[[], Awaitable[BaseModel]],
    resource_type: str,
    status_code: int = 201,
) -> Response:
    """Run `create` once per (client, key); a retry with the same body gets the first answer.

    The stored answer is written in the same transaction as the record it describes, so either
    both exist or neither does. A replay is audited as a read of the record it returns.
    """
    valid_key = check_key(key)
    fingerprint = body_fingerprint(operation, body.model_dump(mode="json"))
    stored = await claim_key(session, caller.client_id, valid_key, operation, fingerprint)
    if stored is not None:
        await record_replay(session, caller, resource_type, stored.body)
        return JSONResponse(
            stored.body, status_code=stored.status, headers={"Idempotent-Replayed": "true"}
        )
    created = await create()
    # Serialised once, by pydantic: the same bytes are stored for replays and sent now.
    payload = created.model_dump_json()
    await store_response(session, caller.client_id, valid_key, status_code, payload)
    return Response(payload, status_code=status_code, media_type="application/json")
