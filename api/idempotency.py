"""Idempotent creates for routes that require `Idempotency-Key` (SPEC 3)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

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
    location: Callable[[Mapping[str, Any]], str],
    status_code: int = 201,
    replayable: Callable[[BaseModel], BaseModel] | None = None,
) -> Response:
    """Run `create` once per (client, key); a retry with the same body gets the first answer.

    The stored answer is written in the same transaction as the record it describes, so either
    both exist or neither does. A replay is audited as a read of the record it returns. A 201,
    first or replayed, carries `Location`: `location` of the created record as answered.
    `replayable` is what of the answer is kept for replays, when not all of it may be stored (a
    secret shown once).
    """
    valid_key = check_key(key)
    fingerprint = body_fingerprint(operation, body.model_dump(mode="json"))
    stored = await claim_key(session, caller.client_id, valid_key, operation, fingerprint)
    if stored is not None:
        await record_replay(session, caller, resource_type, stored.body)
        headers = {"Idempotent-Replayed": "true"}
        if stored.status == 201:
            headers["Location"] = location(stored.body)
        return JSONResponse(stored.body, status_code=stored.status, headers=headers)
    created = await create()
    # Serialised once, by pydantic: the same bytes are stored for replays and sent now.
    payload = created.model_dump_json()
    stored_payload = payload if replayable is None else replayable(created).model_dump_json()
    await store_response(session, caller.client_id, valid_key, status_code, stored_payload)
    headers = {"Location": location(created.model_dump(mode="json"))} if status_code == 201 else {}
    return Response(
        payload, status_code=status_code, media_type="application/json", headers=headers
    )
