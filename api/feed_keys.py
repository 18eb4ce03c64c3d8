"""Feed keys of a registered client (scope `admin`): issue (shown once), list, rotate, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from schemas.feed import FeedKeyCreate, FeedKeyIssued, FeedKeyPublic
from service.auth import feed_keys

from .deps import AdminDep, SessionDep
from .responses import problems

router = APIRouter(prefix="/v1", tags=["administration"])

ClientIdPath = Annotated[str, Path(max_length=64)]
KeyIdPath = Annotated[str, Path(max_length=32)]


def _issued(issued: feed_keys.IssuedFeedKey, response: Response) -> FeedKeyIssued:
    """The new key, once, with `Location` naming it."""
    public = FeedKeyPublic.model_validate(issued.feed_key)
    response.headers["Location"] = f"/v1/clients/{public.client_id}/feed-keys/{public.key_id}"
    return FeedKeyIssued(**public.model_dump(), feed_key=issued.key)


@router.post(
    "/clients/{client_id}/feed-keys", status_code=201, responses=problems(401, 403, 404, 409, 422)
)
async def create_feed_key(
    client_id: ClientIdPath,
    body: FeedKeyCreate,
    session: SessionDep,
    caller: AdminDep,
    response: Response,
) -> FeedKeyIssued:
    """Issue a feed key for a client that may read indicators: a long-lived, read-only
    credential for BI tools, opening only the OData feed and the indicators. Shown once, in this
    response only. 409 when the client lacks indicators:read."""
    return _issued(await feed_keys.create_feed_key(session, client_id, body.name), response)


@router.get("/clients/{client_id}/feed-keys", responses=problems(401, 403))
async def list_feed_keys(
    client_id: ClientIdPath, session: SessionDep, caller: AdminDep
) -> list[FeedKeyPublic]:
    """The client's feed keys, revoked ones included; never the keys themselves."""
    return [
        FeedKeyPublic.model_validate(key)
        for key in await feed_keys.list_feed_keys(session, client_id)
    ]


@router.get("/clients/{client_id}/feed-keys/{key_id}", responses=problems(401, 403, 404))
async def get_feed_key(
    client_id: ClientIdPath, key_id: KeyIdPath, session: SessionDep, caller: AdminDep
) -> FeedKeyPublic:
    """One of the client's feed keys, revoked or not; never the key itself."""
    return FeedKeyPublic.model_validate(await feed_keys.get_feed_key(session, key_id, client_id))


@router.post("/clients/{client_id}/feed-keys/{key_id}/revoke", responses=problems(401, 403, 404))
async def revoke_feed_key(
    client_id: ClientIdPath, key_id: KeyIdPath, session: SessionDep, caller: AdminDep
) -> FeedKeyPublic:
    """Revoke a feed key: refused from the next request on."""
    revoked = await feed_keys.revoke_feed_key(session, key_id, client_id)
    return FeedKeyPublic.model_validate(revoked)


@router.post(
    "/clients/{client_id}/feed-keys/{key_id}/rotate",
    status_code=201,
    responses=problems(401, 403, 404, 409),
)
async def rotate_feed_key(
    client_id: ClientIdPath,
    key_id: KeyIdPath,
    session: SessionDep,
    caller: AdminDep,
    response: Response,
) -> FeedKeyIssued:
    """Revoke a feed key and issue its replacement (same name), shown once; the old key stops
    working at once. 409 when the key is revoked already."""
    return _issued(await feed_keys.rotate_feed_key(session, key_id, client_id), response)
