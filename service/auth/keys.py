"""The built-in authorization server's signing keys and the tokens it issues.

The newest key that is not retired signs. `rotate_signing_key` (`neglect-service keys rotate`)
retires it and makes a new one; a retired key's public half stays in the JWKS, and keeps
verifying, for `retired_key_window_s`: the longest a token it signed can still be valid. Private
keys are stored encrypted (`service.auth.key_encryption`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt
from sqlalchemy import delete, func, or_, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from service.auth.key_encryption import (
    KeyEncryptionKey,
    SigningKeyError,
    SigningKeyUnreadable,
    decrypt_private_key,
    encrypt_private_key,
)
from service.db import SessionFactory, transaction
from service.models import SigningKey
from service.settings import Settings

logger = logging.getLogger(__name__)

ALGORITHM = "RS256"
_KEY_LOCK = 0x6E65676C  # advisory lock id: one replica at a time creates or rotates keys
# A token naming a kid this process does not know reloads the keys, at most this often, so a
# stream of made-up kids costs at most one small query a second.
_UNKNOWN_KID_RELOAD_S = 1.0


class NoSigningKey(SigningKeyError):
    """The table holds no key that may sign."""


@dataclass(frozen=True)
class KeyRing:
    """The active private key for signing and every public key for verification, by kid."""

    active_kid: str
    active_private_pem: str = field(repr=False)
    public_jwks: dict[str, dict[str, Any]]

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        return {"keys": list(self.public_jwks.values())}


@dataclass(frozen=True)
class Rotation:
    new_kid: str
    retired_kids: list[str]
    deleted_kids: list[str]


def retired_key_window_s(settings: Settings) -> int:
    """How long a retired key stays published. A process signs with the old key until its next
    reload, and a token lives `token_ttl_s` (plus the clock leeway) after it is issued."""
    return (
        math.ceil(settings.signing_key_reload_interval_s)
        + settings.token_ttl_s
        + settings.jwt_leeway_s
    )


def new_signing_key(kek: KeyEncryptionKey) -> SigningKey:
    """A new key pair, its private half encrypted; not stored yet."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    kid = secrets.token_hex(8)
    public = jwk.construct(pem.decode(), ALGORITHM).public_key().to_dict()
    public.update({"kid": kid, "use": "sig", "alg": ALGORITHM})
    return SigningKey.model_validate(
        {
            "kid": kid,
            "algorithm": ALGORITHM,
            "encrypted_private_key": encrypt_private_key(kek, kid, pem),
            "kek_id": kek.kek_id,
            "public_jwk": public,
        }
    )


async def _lock_keys(session: AsyncSession) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _KEY_LOCK})


async def ensure_signing_key(session: AsyncSession, kek: KeyEncryptionKey) -> None:
    """Create the first key pair unless one exists; safe when many replicas start together."""
    await _lock_keys(session)
    existing = await session.scalar(
        select(SigningKey.kid).where(col(SigningKey.retired_at).is_(None)).limit(1)
    )
    if existing is None:
        session.add(new_signing_key(kek))
        await session.flush()


async def rotate_signing_key(
    session: AsyncSession, kek: KeyEncryptionKey, window_s: int
) -> Rotation:
    """A new key signs from now on; the active one is retired. Keys retired longer ago than
    `window_s` are no longer published, so their rows, private halves included, are deleted."""
    await _lock_keys(session)
    retired = await session.scalars(
        update(SigningKey)
        .where(col(SigningKey.retired_at).is_(None))
        .values(retired_at=func.now())
        .returning(col(SigningKey.kid))
    )
    retired_kids = list(retired)
    deleted = await session.scalars(
        delete(SigningKey)
        .where(col(SigningKey.retired_at) < func.now() - timedelta(seconds=window_s))
        .returning(col(SigningKey.kid))
    )
    deleted_kids = list(deleted)
    key = new_signing_key(kek)
    session.add(key)
    await session.flush()
    return Rotation(new_kid=key.kid, retired_kids=retired_kids, deleted_kids=deleted_kids)


async def list_signing_keys(session: AsyncSession) -> list[SigningKey]:
    """Every stored key, newest first."""
    query = select(SigningKey).order_by(col(SigningKey.created_at).desc())
    return list(await session.scalars(query))


async def load_key_ring(
    session: AsyncSession,
    kek: KeyEncryptionKey,
    window_s: int,
    previous: KeyRing | None = None,
) -> KeyRing:
    """The active key, decrypted (unless `previous` already holds it), and the public keys of
    every key still published: active, or retired less than `window_s` ago."""
    published_since = func.now() - timedelta(seconds=window_s)
    query = (
        select(SigningKey)
        .where(
            or_(
                col(SigningKey.retired_at).is_(None),
                col(SigningKey.retired_at) > published_since,
            )
        )
        .order_by(col(SigningKey.created_at).desc(), col(SigningKey.kid))
    )
    keys = list(await session.scalars(query))
    active = next((key for key in keys if key.retired_at is None), None)
    if active is None:
        raise NoSigningKey("no signing key: run migrations and start the service once")
    public_jwks = {key.kid: key.public_jwk for key in keys}
    if previous is not None and previous.active_kid == active.kid:
        return KeyRing(active.kid, previous.active_private_pem, public_jwks)
    try:
        private_pem = decrypt_private_key(
            kek, active.kid, active.kek_id, active.encrypted_private_key
        ).decode()
    except SigningKeyUnreadable:
        if previous is None:
            raise
        # The new key was made under a KEK this process has not been given yet (the KEK is
        # being replaced): it keeps signing with the key it has, published until the window
        # ends, and learns the new public keys, so it accepts the new key's tokens meanwhile.
        logger.error(
            "the signing key does not decrypt with this process's key-encryption key; "
            "signing with the previous key until restarted with the new one"
        )
        return KeyRing(previous.active_kid, previous.active_private_pem, public_jwks)
    return KeyRing(active.kid, private_pem, public_jwks)


class KeyRingProvider:
    """One process's copy of the key ring, shared by its requests.

    Every replica reads the keys from the database: again once `signing_key_reload_interval_s`
    has passed, so a rotation made anywhere changes the signing key here and retired keys leave
    the JWKS; and at once when a token names a kid not in the ring, so a token signed by a
    replica that saw a rotation first verifies here too. A failed reload keeps the ring already
    loaded (and is logged); only the first load must succeed.
    """

    def __init__(self, factory: SessionFactory, kek: KeyEncryptionKey, settings: Settings) -> None:
        self._factory = factory
        self._kek = kek
        self._reload_interval = settings.signing_key_reload_interval_s
        self._window_s = retired_key_window_s(settings)
        self._ring: KeyRing | None = None
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    def _age(self) -> float:
        return time.monotonic() - self._loaded_at

    async def __call__(self) -> KeyRing:
        ring = self._ring
        if ring is None or self._age() >= self._reload_interval:
            ring = await self._reload(self._reload_interval)
        return ring

    async def key(self, kid: str) -> dict[str, Any] | None:
        """The public JWK that verifies tokens naming `kid`, if it is published."""
        ring = await self()
        if kid not in ring.public_jwks and self._age() >= _UNKNOWN_KID_RELOAD_S:
            ring = await self._reload(_UNKNOWN_KID_RELOAD_S)
        return ring.public_jwks.get(kid)

    async def _reload(self, fresh_for: float) -> KeyRing:
        async with self._lock:
            # Another task may have reloaded while this one waited for the lock.
            if self._ring is not None and self._age() < fresh_for:
                return self._ring
            try:
                async with transaction(self._factory) as session:
                    ring = await load_key_ring(session, self._kek, self._window_s, self._ring)
            except (SQLAlchemyError, OSError, SigningKeyError) as exc:
                if self._ring is None:
                    raise
                logger.warning(
                    "signing key reload failed; the keys loaded before stay in use",
                    extra={"error": type(exc).__name__},
                )
                self._loaded_at = time.monotonic()
                return self._ring
            self._ring, self._loaded_at = ring, time.monotonic()
            return ring


def issue_access_token(
    ring: KeyRing, *, issuer: str, audience: str, client_id: str, scopes: list[str], ttl_s: int
) -> str:
    """An RFC 9068 `at+jwt` access token for a client-credentials grant."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": client_id,
        "client_id": client_id,
        "scope": " ".join(scopes),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": str(uuid.uuid4()),
    }
    token: str = jwt.encode(
        claims,
        ring.active_private_pem,
        algorithm=ALGORITHM,
        headers={"kid": ring.active_kid, "typ": "at+jwt"},
    )
    return token
