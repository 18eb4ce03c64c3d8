"""The resource server's token check: the one place python-jose is called to verify a token.

python-jose verifies whatever algorithm a token names unless told otherwise and requires no claim
by default, so this module pins the algorithms to the configured asymmetric ones and requires
`iss`, `aud`, `exp`, `iat` and `sub`. Keys come from the built-in issuer's key ring (reloaded from
the database, `service.auth.keys.KeyRingProvider`) or from an external issuer's JWKS, fetched with
httpx, cached, and re-fetched on an unknown `kid` at most once a minute. Any doubt fails closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson
from jose import JWTError, jwk, jwt
from jose.backends.base import Key

from service.auth.scopes import parse_scopes
from service.errors import AuthenticationFailed
from service.settings import Settings

logger = logging.getLogger(__name__)

# RFC 9068 section 4: our own tokens are `at+jwt` (the `application/` prefix may be left out,
# RFC 7515 4.1.9, and media types compare case-insensitively). An external provider's may be plain
# JWTs (Entra ID's say `JWT`, some say nothing), but never another kind of JWT (an ID token...).
_BUILTIN_TYPES = {"at+jwt", "application/at+jwt"}
_EXTERNAL_TYPES = {None, "jwt", "application/jwt", *_BUILTIN_TYPES}
_TIME_CLAIMS = ("exp", "iat", "nbf")
_MAX_CACHED_KEYS = 64
_MAX_CACHED_TOKENS = 4096
_MAX_CACHED_TOKEN_LENGTH = 4096


class KeySource(Protocol):
    """An issuer's public keys: the JWK for a kid, or None when the issuer publishes none."""

    async def key(self, kid: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class VerifiedToken:
    issuer: str
    client_id: str
    scopes: list[str]
    jti: str | None


class JwksCache:
    """Keys of an external issuer, by kid. A fetch failure leaves no keys to trust."""

    def __init__(self, url: str, refetch_interval_s: float, client: httpx.AsyncClient) -> None:
        self._url = url
        self._interval = refetch_interval_s
        self._client = client
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> dict[str, Any] | None:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at >= self._interval:
                await self._refetch()
        return self._keys.get(kid or "")

    async def _refetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            response = await self._client.get(self._url, timeout=5.0)
            response.raise_for_status()
            keys = response.json()["keys"]
            self._keys = {key["kid"]: key for key in keys if isinstance(key, dict) and "kid" in key}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            logger.warning("jwks fetch failed", extra={"error": type(exc).__name__})


class TokenVerifier:
    def __init__(
        self,
        settings: Settings,
        builtin: KeySource,
        external: KeySource | None,
    ) -> None:
        self._settings = settings
        self._builtin = builtin
        self._external = external
        self._keys: dict[tuple[str, bytes], Key] = {}
        self._verified: dict[str, tuple[VerifiedToken, float]] = {}

    def _constructed(self, key: dict[str, Any], algorithm: str) -> Key:
        """The key object for a JWK, built once: python-jose would rebuild it on every call.
        The algorithm is part of the cache key; it was checked against the allowed list."""
        cache_key = (algorithm, orjson.dumps(key, option=orjson.OPT_SORT_KEYS))
        constructed = self._keys.get(cache_key)
        if constructed is None:
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
            constructed = jwk.construct(key, algorithm)
            self._keys[cache_key] = constructed
        return constructed

    async def verify(self, token: str) -> VerifiedToken:
        """The verified claims of a bearer token, or `AuthenticationFailed`.

        A machine client sends one token for many requests, so a verified token is remembered,
        until its `exp` (with no leeway) or for as long as a signing key may be trusted without
        a re-fetch (`jwks_refetch_interval_s`), whichever ends first.
        """
        now = time.time()
        remembered = self._verified.get(token)
        if remembered is not None:
            verified, until = remembered
            if now < until:
                return verified
            del self._verified[token]
        verified, expires_at = await self._verify(token)
        if len(token) <= _MAX_CACHED_TOKEN_LENGTH:
            if len(self._verified) >= _MAX_CACHED_TOKENS:
                self._verified.clear()
            self._verified[token] = (
                verified,
                min(expires_at, now + self._settings.jwks_refetch_interval_s),
            )
        return verified

    async def _verify(self, token: str) -> tuple[VerifiedToken, float]:
        """Check the token's signature and claims; (claims, `exp`)."""
        settings = self._settings
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.get_unverified_claims(token)
        except JWTError as exc:
            raise AuthenticationFailed("the token is malformed") from exc
        if header.get("alg") not in settings.jwt_algorithms:
            raise AuthenticationFailed("the token's algorithm is not accepted")
        if "crit" in header:
            # RFC 7515 4.1.11 and RFC 8725: we understand no extension, so none may be critical.
            raise AuthenticationFailed("the token has critical header parameters")
        raw_type = header.get("typ")
        if raw_type is not None and not isinstance(raw_type, str):
            raise AuthenticationFailed("the token is not an access token")
        token_type = raw_type.lower() if raw_type is not None else None
        for name in _TIME_CLAIMS:
            value = unverified.get(name)
            # python-jose would take "1767225600" (a string) as a time, and JSON's Infinity too.
            if name in unverified and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise AuthenticationFailed(f"the token's {name} is not a number")
        issuer = unverified.get("iss")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthenticationFailed("the token names no key")
        key: dict[str, Any] | None
        if issuer == settings.issuer:
            if token_type not in _BUILTIN_TYPES:
                raise AuthenticationFailed("the token is not an at+jwt access token")
            key = await self._builtin.key(kid)
        elif issuer is not None and issuer == settings.external_issuer and self._external:
            if token_type not in _EXTERNAL_TYPES:
                raise AuthenticationFailed("the token is not an access token")
            key = await self._external.key(kid)
        else:
            raise AuthenticationFailed("the token's issuer is not trusted")
        if key is None:
            raise AuthenticationFailed("the token's signing key is unknown")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._constructed(key, header["alg"]),
                algorithms=settings.jwt_algorithms,
                audience=settings.audience,
                issuer=issuer,
                options={
                    "require_iss": True,
                    "require_aud": True,
                    "require_exp": True,
                    "require_iat": True,
                    "require_sub": True,
                    "leeway": settings.jwt_leeway_s,
                },
            )
        except JWTError as exc:
            raise AuthenticationFailed("the token is invalid or expired") from exc
        if not isinstance(claims.get("iat"), int | float) or claims["iat"] > time.time() + (
            settings.jwt_leeway_s
        ):
            raise AuthenticationFailed("the token was issued in the future")
        client_id = claims.get("client_id") or claims.get("sub")
        if not isinstance(client_id, str) or not client_id:
            raise AuthenticationFailed("the token names no client")
        raw_scope = claims.get("scope", claims.get("scp", ""))
        scopes = parse_scopes(raw_scope if isinstance(raw_scope, str) else " ".join(raw_scope))
        jti = claims.get("jti")
        verified = VerifiedToken(
            issuer=issuer,
            client_id=client_id,
            scopes=scopes,
            jti=jti if isinstance(jti, str) else None,
        )
        return verified, float(claims["exp"])
