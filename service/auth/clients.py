"""The client registry: every caller is registered here, with its agency and allowed scopes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from service.auth.scopes import unknown_scopes
from service.db import function_call
from service.errors import (
    AuthenticationFailed,
    Conflict,
    InsufficientScope,
    NotFound,
    SelfDisable,
    Unprocessable,
)
from service.models import ApiClient

# Secrets are 256 random bits, so scrypt's cost here is defence in depth, not password stretching.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**12, 8, 1


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    salt_text = base64.urlsafe_b64encode(salt).decode()
    digest_text = base64.urlsafe_b64encode(digest).decode()
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt_text}${digest_text}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(
        secret.encode(),
        salt=base64.urlsafe_b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
    )
    return hmac.compare_digest(candidate, base64.urlsafe_b64decode(digest))


@cache
def _stand_in_hash() -> str:
    """A hash of a secret nobody knows, with the current parameters, made once per process."""
    return hash_secret(secrets.token_urlsafe(32))


def client_secret_matches(client: ApiClient | None, secret: str) -> bool:
    """Whether `client` exists, is enabled, has a secret, and `secret` is it.

    Every case hashes the presented secret once with the same parameters: an unknown, disabled or
    secretless client checks it against a stand-in hash, so the answer takes as long as a wrong
    secret does and the time tells nobody which client ids exist. CPU-bound (milliseconds): call
    it off the event loop.
    """
    if client is not None and client.enabled and client.secret_hash is not None:
        return verify_secret(secret, client.secret_hash)
    verify_secret(secret, _stand_in_hash())
    return False


@dataclass(frozen=True)
class CreatedClient:
    client: ApiClient
    secret: str | None
    """Shown once; only its hash is stored."""


async def create_client(
    session: AsyncSession,
    *,
    name: str,
    agency_type: str,
    agency_name: str,
    scopes: list[str],
    issuer: str | None = None,
    client_id: str | None = None,
) -> CreatedClient:
    """Register a client. Without `issuer` it gets a secret for our own token endpoint;
    with one (an external identity provider) it gets none and `client_id` must be the id
    that provider puts in its tokens."""
    bad = unknown_scopes(scopes)
    if bad:
        raise Unprocessable(f"unknown scopes: {', '.join(bad)}")
    if not scopes:
        raise Unprocessable("a client needs at least one scope")
    secret = None if issuer else secrets.token_urlsafe(32)
    client = ApiClient.model_validate(
        {
            "client_id": client_id or f"nsc_{secrets.token_hex(10)}",
            "name": name,
            "agency_type": agency_type,
            "agency_name": agency_name,
            "allowed_scopes": scopes,
            "secret_hash": hash_secret(secret) if secret else None,
            "issuer": issuer,
        }
    )
    try:
        async with session.begin_nested():
            session.add(client)
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a client with id {client.client_id} is registered already") from exc
    return CreatedClient(client=client, secret=secret)


async def get_client(session: AsyncSession, client_id: str) -> ApiClient | None:
    return await session.get(ApiClient, client_id)


@dataclass(frozen=True)
class CheckedClient:
    """What every authenticated request needs to know about its client."""

    agency_type: str
    agency_name: str
    granted_scopes: frozenset[str]
    """The token's scopes that the client is allowed."""


_CHECK_ARGUMENTS: Final = (
    "client_id",
    "issuer",
    "default_issuer",
    "required_scopes",
    "token_scopes",
)
# One function call: it runs on every authenticated request, and `neglect_create_referral` makes
# the same check inside its own round trip.
_CHECK_CLIENT = function_call("neglect_check_client", _CHECK_ARGUMENTS, record=True)


def raise_for_client_outcome(
    outcome: str, required_scopes: Sequence[str], missing_scopes: Sequence[str]
) -> None:
    """The error for a refusal `neglect_check_client` answered, if `outcome` is one."""
    if outcome == "unregistered":
        raise AuthenticationFailed("the client is not registered or is disabled")
    if outcome == "wrong_issuer":
        raise AuthenticationFailed("the client is not registered with this token's issuer")
    if outcome == "forbidden":
        raise InsufficientScope(
            f"this needs the scope {' '.join(missing_scopes)}", scope=" ".join(required_scopes)
        )


async def check_client(
    session: AsyncSession,
    *,
    client_id: str,
    issuer: str,
    default_issuer: str,
    required_scopes: Sequence[str],
    token_scopes: Sequence[str],
) -> CheckedClient:
    """The enabled client registered with this issuer (ours, `default_issuer`, for a client
    registered without one), allowed every required scope among the token's.

    Raises `AuthenticationFailed` or `InsufficientScope` otherwise.
    """
    row = (
        await session.execute(
            _CHECK_CLIENT,
            {
                "client_id": client_id,
                "issuer": issuer,
                "default_issuer": default_issuer,
                "required_scopes": list(required_scopes),
                "token_scopes": list(token_scopes),
            },
        )
    ).one()
    raise_for_client_outcome(row.outcome, required_scopes, row.missing_scopes or ())
    return CheckedClient(
        agency_type=row.agency_type,
        agency_name=row.agency_name,
        granted_scopes=frozenset(row.granted_scopes),
    )


async def list_clients(session: AsyncSession) -> list[ApiClient]:
    rows = await session.scalars(select(ApiClient).order_by(col(ApiClient.created_at)))
    return list(rows)


async def disable_client(
    session: AsyncSession, client_id: str, *, acting_client_id: str | None = None
) -> ApiClient:
    """Disable a client. `acting_client_id` is the client asking (none from the command line):
    a client may not disable itself, or an only admin client would lock every admin out."""
    if acting_client_id is not None and acting_client_id == client_id:
        raise SelfDisable(
            "a client cannot disable itself; disable it with another admin client or "
            "`neglect-service clients disable`"
        )
    client = await session.get(ApiClient, client_id, with_for_update=True)
    if client is None:
        raise NotFound(f"no client {client_id}")
    client.enabled = False
    client.disabled_at = datetime.now(UTC)
    await session.flush()
    return client


async def _locked_client(session: AsyncSession, client_id: str) -> ApiClient:
    client = await session.get(ApiClient, client_id, with_for_update=True)
    if client is None:
        raise NotFound(f"no client {client_id}")
    return client


async def enable_client(session: AsyncSession, client_id: str) -> ApiClient:
    """Enable a client again (enabling an enabled one changes nothing); its secret is unchanged,
    so rotate it too if the client was disabled because the secret leaked."""
    client = await _locked_client(session, client_id)
    client.enabled = True
    client.disabled_at = None
    await session.flush()
    return client


@dataclass(frozen=True)
class RotatedSecret:
    client: ApiClient
    secret: str
    """Shown once; only its hash is stored."""


async def rotate_client_secret(session: AsyncSession, client_id: str) -> RotatedSecret:
    """Give a client a new secret, returned once; the old one stops working at once. Tokens
    already issued stay valid until they expire: disable the client to refuse them sooner."""
    client = await _locked_client(session, client_id)
    if client.issuer is not None:
        raise Conflict(
            f"client {client_id} gets its tokens from {client.issuer}; it has no secret here"
        )
    secret = secrets.token_urlsafe(32)
    client.secret_hash = hash_secret(secret)
    await session.flush()
    return RotatedSecret(client=client, secret=secret)
