"""Feed keys: long-lived, read-only credentials that BI tools (Power BI, Excel) can hold, since
their connectors cannot run the client-credentials flow or renew a 15-minute token.

A key belongs to one registered client and opens only the aggregate routes (the OData feed and the
indicators), with small numbers suppressed, whatever else the client may do. It works while the
client is enabled, holds `indicators:read` and the key is not revoked; revocation takes effect on
the next request. The key is shown once; only its SHA-256 is stored (it is 256 random bits, so
no slow hash is needed and the lookup costs one indexed read).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from service.errors import Conflict, NotFound
from service.models import ApiClient, FeedKey

KEY_PREFIX: Final = "nfk_"
FEED_SCOPE: Final = "indicators:read"
"""The one scope a feed key ever grants, and which its client must hold."""
FEED_KEY_PATTERN: Final = re.compile(r"nfk_[A-Za-z0-9_-]{43}")
"""What a feed key looks like, for scanners and for redacting logs."""
_HINT_LENGTH: Final = 8


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedFeedKey:
    feed_key: FeedKey
    key: str
    """Shown once; only its hash is stored."""


async def _client_for_keys(session: AsyncSession, client_id: str) -> ApiClient:
    client = await session.get(ApiClient, client_id)
    if client is None:
        raise NotFound(f"no client {client_id}")
    if FEED_SCOPE not in client.allowed_scopes:
        raise Conflict(
            f"client {client_id} may not read indicators ({FEED_SCOPE}); a feed key "
            "would open nothing"
        )
    return client


async def create_feed_key(session: AsyncSession, client_id: str, name: str) -> IssuedFeedKey:
    """A new feed key for the client, returned once."""
    await _client_for_keys(session, client_id)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    feed_key = FeedKey.model_validate(
        {
            "key_id": f"fk_{secrets.token_hex(8)}",
            "client_id": client_id,
            "name": name,
            "key_sha256": _sha256(key),
            "key_hint": key[:_HINT_LENGTH],
        }
    )
    session.add(feed_key)
    await session.flush()
    return IssuedFeedKey(feed_key=feed_key, key=key)


async def list_feed_keys(session: AsyncSession, client_id: str | None = None) -> list[FeedKey]:
    """Every feed key (of one client), oldest first, revoked ones included."""
    query = select(FeedKey).order_by(col(FeedKey.created_at), col(FeedKey.key_id))
    if client_id is not None:
        query = query.where(col(FeedKey.client_id) == client_id)
    return list(await session.scalars(query))


async def get_feed_key(session: AsyncSession, key_id: str, client_id: str) -> FeedKey:
    """One of the client's feed keys (revoked or not); NotFound for another client's."""
    feed_key = await session.get(FeedKey, key_id)
    if feed_key is None or feed_key.client_id != client_id:
        raise NotFound(f"no feed key {key_id}")
    return feed_key


async def _locked_key(session: AsyncSession, key_id: str, client_id: str | None) -> FeedKey:
    feed_key = await session.get(FeedKey, key_id, with_for_update=True)
    if feed_key is None or (client_id is not None and feed_key.client_id != client_id):
        raise NotFound(f"no feed key {key_id}")
    return feed_key


async def revoke_feed_key(
    session: AsyncSession, key_id: str, client_id: str | None = None
) -> FeedKey:
    """Revoke a key: refused from the next request on. Revoking a revoked key changes nothing.
    `client_id`, when given, must be the key's client (the API names both)."""
    feed_key = await _locked_key(session, key_id, client_id)
    if feed_key.revoked_at is None:
        feed_key.revoked_at = datetime.now(UTC)
        await session.flush()
    return feed_key


async def rotate_feed_key(
    session: AsyncSession, key_id: str, client_id: str | None = None
) -> IssuedFeedKey:
    """Revoke a key and issue its replacement, with the same name, in one transaction."""
    old = await _locked_key(session, key_id, client_id)
    if old.revoked_at is not None:
        raise Conflict(f"feed key {key_id} is revoked already; create a new one instead")
    old.revoked_at = datetime.now(UTC)
    await session.flush()
    return await create_feed_key(session, old.client_id, old.name)


@dataclass(frozen=True)
class FeedKeyHolder:
    """The client behind a valid feed key."""

    key_id: str
    client_id: str
    agency_type: str
    agency_name: str


# Plain SQL, like the bearer path's client lookup: it runs on every request of a feed pull.
_HOLDER = text(
    "SELECT k.key_id, c.client_id, c.agency_type, c.agency_name "
    "FROM feed_key k JOIN api_client c ON c.client_id = k.client_id "
    "WHERE k.key_sha256 = :sha256 AND k.revoked_at IS NULL AND c.enabled "
    "AND :scope = ANY (c.allowed_scopes)"
)


async def find_feed_key_holder(
    session: AsyncSession, key: str, client_id: str | None = None
) -> FeedKeyHolder | None:
    """The holder of an unrevoked key of an enabled client allowed to read indicators; None
    otherwise. With `client_id` (HTTP Basic), the key must also be that client's."""
    if not FEED_KEY_PATTERN.fullmatch(key):
        return None
    row = (
        await session.execute(_HOLDER, {"sha256": _sha256(key), "scope": FEED_SCOPE})
    ).one_or_none()
    if row is None or (client_id is not None and row.client_id != client_id):
        return None
    return FeedKeyHolder(**row._mapping)
