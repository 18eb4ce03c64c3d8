"""The resource server's token check: the one place python-jose is called to verify a token.

python-jose verifies whatever algorithm a token names unless told otherwise and requires no claim
by default, so this module pins the algorithms to the configured asymmetric ones and requires
`iss`, `aud`, `exp`, `iat` and `sub`. A token is checked against the issuer its `iss` names, and
only if that issuer is ours or trusted (`service.auth.issuers`): its keys, accepted types and
audiences, and where it names its client and carries its scopes. Keys come from the built-in
issuer's key ring (reloaded from the database, `service.auth.keys.KeyRingProvider`) or from an
external issuer's JWKS, found through its discovery document unless configured, fetched with
httpx, cached, and re-fetched on an unknown `kid` at most once a minute. Any doubt fails closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson
from jose import JWTError, jwk, jwt
from jose.backends.base import Key

from service.auth.issuers import (
    AT_JWT_TYPES,
    IssuerProfile,
    TokenShapeError,
    accepted_audiences,
    builtin_profile,
    is_delegated,
    read_claims,
    trusted_issuer_profiles,
)
from service.errors import AuthenticationFailed
from service.settings import Settings, https_or_loopback

logger = logging.getLogger(__name__)

_TIME_CLAIMS = ("exp", "iat", "nbf")
_MAX_CACHED_KEYS = 64
_MAX_CACHED_TOKENS = 4096
_MAX_CACHED_TOKEN_LENGTH = 4096
_FETCH_TIMEOUT_S = 5.0


class KeySource(Protocol):
    """An issuer's public keys: the JWK for a kid, or None when the issuer publishes none."""

    async def key(self, kid: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class VerifiedToken:
    issuer: str
    client_id: str
    scopes: list[str]
    jti: str | None
    user: str | None = None
    """A delegated token's user (Entra ID `oid`): such a token opens the aggregate routes only."""


class JwksCache:
    """Keys of an external issuer, by kid, from its JWKS at `url`, or at the `jwks_uri` of the
    discovery document at `discovery_url` (which must name `issuer`).

    The JWKS URL found by discovery is kept until a JWKS fetch fails; the next fetch discovers
    it again. A fetch is made for an unknown kid, at most once per `refetch_interval_s`. Until the
    first fetch succeeds there are no keys to trust; a failed re-fetch keeps the keys it had.
    """

    def __init__(
        self,
        url: str | None,
        refetch_interval_s: float,
        client: httpx.AsyncClient,
        *,
        discovery_url: str | None = None,
        issuer: str | None = None,
    ) -> None:
        if url is None and (discovery_url is None or issuer is None):
            raise ValueError("a JWKS URL, or a discovery URL and the issuer it describes")
        self._url = url
        self._discovery_url = discovery_url
        self._issuer = issuer
        self._discovered: str | None = None
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

    async def _jwks_url(self) -> str:
        if self._url is not None:
            return self._url
        if self._discovered is None:
            response = await self._client.get(str(self._discovery_url), timeout=_FETCH_TIMEOUT_S)
            response.raise_for_status()
            document = response.json()
            jwks_uri = document["jwks_uri"]
            # OpenID Connect Discovery 1.0, 4.3: a document for another issuer is not this one's.
            if document["issuer"] != self._issuer or not isinstance(jwks_uri, str):
                raise ValueError("the discovery document is not this issuer's")
            self._discovered = https_or_loopback(jwks_uri, "jwks_uri")
        return self._discovered

    async def _refetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            response = await self._client.get(await self._jwks_url(), timeout=_FETCH_TIMEOUT_S)
            response.raise_for_status()
            keys = response.json()["keys"]
            # Keycloak publishes its encryption key beside the signing keys: never verify with it.
            self._keys = {
                key["kid"]: key
                for key in keys
                if isinstance(key, dict)
                and isinstance(key.get("kid"), str)
                and key.get("use", "sig") == "sig"
            }
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self._discovered = None
            logger.warning(
                "jwks fetch failed",
                extra={"issuer": self._issuer or self._url, "error": type(exc).__name__},
            )


@dataclass(frozen=True)
class ExternalIssuer:
    """A trusted external issuer: how its tokens are read, and where its keys come from."""

    profile: IssuerProfile
    keys: KeySource


def external_issuers(settings: Settings, client: httpx.AsyncClient) -> list[ExternalIssuer]:
    """Every configured external issuer, each with its own JWKS cache."""
    return [
        ExternalIssuer(
            profile,
            JwksCache(
                profile.jwks_url,
                settings.jwks_refetch_interval_s,
                client,
                discovery_url=profile.discovery_url,
                issuer=profile.issuer,
            ),
        )
        for profile in trusted_issuer_profiles(settings)
    ]


class TokenVerifier:
    def __init__(
        self,
        settings: Settings,
        builtin: KeySource,
        external: Iterable[ExternalIssuer] | None = None,
    ) -> None:
        self._settings = settings
        self._issuers: dict[str, tuple[IssuerProfile, KeySource]] = {
            item.profile.issuer: (item.profile, item.keys) for item in external or ()
        }
        self._issuers[settings.issuer] = (builtin_profile(settings), builtin)
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
        trusted = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if trusted is None:
            raise AuthenticationFailed("the token's issuer is not trusted")
        profile, keys = trusted
        if token_type not in profile.types:
            raise AuthenticationFailed(
                "the token is not an at+jwt access token"
                if profile.types == AT_JWT_TYPES
                else "the token is not an access token of this issuer's type"
            )
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthenticationFailed("the token names no key")
        key = await keys.key(kid)
        if key is None:
            raise AuthenticationFailed("the token's signing key is unknown")
        if "alg" in key and key["alg"] != header["alg"]:
            # RFC 8725 3.1: a key is used with the one algorithm it was published for.
            raise AuthenticationFailed("the token's algorithm is not its key's")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._constructed(key, header["alg"]),
                algorithms=settings.jwt_algorithms,
                issuer=issuer,
                options={
                    # Required and checked below against the issuer's audiences: python-jose
                    # takes only one (and `require_aud` would turn its own check back on).
                    "verify_aud": False,
                    "require_iss": True,
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
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        accepted = accepted_audiences(profile, claims)
        if not isinstance(audiences, list) or not any(
            isinstance(item, str) and item in accepted for item in audiences
        ):
            raise AuthenticationFailed(
                "the user's delegated token is not for the feed (aud)"
                if is_delegated(profile, claims)
                else "the token is not for this service (aud)"
            )
        try:
            read = read_claims(profile, claims)
        except TokenShapeError as exc:
            raise AuthenticationFailed(str(exc)) from exc
        jti = claims.get("jti")
        verified = VerifiedToken(
            issuer=profile.issuer,
            client_id=read.client_id,
            scopes=read.scopes,
            jti=jti if isinstance(jti, str) else None,
            user=read.user,
        )
        return verified, float(claims["exp"])
