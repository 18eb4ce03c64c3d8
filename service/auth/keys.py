"""The built-in authorization server's signing keys and the tokens it issues."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from service.models import SigningKey

ALGORITHM = "RS256"
_KEY_LOCK = 0x6E65676C  # advisory lock id: only one replica generates the first key


@dataclass(frozen=True)
class KeyRing:
    """The active private key for signing and every public key for verification, by kid."""

    active_kid: str
    active_private_pem: str
    public_jwks: dict[str, dict[str, Any]]

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        return {"keys": list(self.public_jwks.values())}


def _new_key() -> SigningKey:
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
        {"kid": kid, "algorithm": ALGORITHM, "private_pem": pem, "public_jwk": public}
    )


async def ensure_signing_key(session: AsyncSession) -> None:
    """Create the first key pair unless one exists; safe when many replicas start together."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _KEY_LOCK})
    existing = await session.scalar(
        select(SigningKey.kid).where(col(SigningKey.retired_at).is_(None)).limit(1)
    )
    if existing is None:
        session.add(_new_key())
        await session.flush()


async def load_key_ring(session: AsyncSession) -> KeyRing:
    query = select(SigningKey).order_by(col(SigningKey.created_at).desc())
    keys = list(await session.scalars(query))
    active = next((key for key in keys if key.retired_at is None), None)
    if active is None:
        raise RuntimeError("no signing key: run migrations and start the service once")
    return KeyRing(
        active_kid=active.kid,
        active_private_pem=active.private_pem.decode(),
        public_jwks={key.kid: key.public_jwk for key in keys},
    )


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
