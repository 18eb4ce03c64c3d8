"""The issuers whose tokens the service accepts, and how each one's tokens are read.

Providers disagree on where a client-credentials token names its client and carries its
permissions: Entra ID puts the calling app in `azp` (v2) or `appid` (v1) and its app roles in
`roles`, with `sub` the service principal's object id; Keycloak names the client in `azp`, puts
client scopes in `scope` and `typ: Bearer` in the payload; our own issuer uses `client_id` and
`scope`. An `IssuerProfile` says, for one `iss`, which claims to read and which shapes to refuse;
the presets below are the documented shapes, and every field can be overridden per issuer
(`NEGLECT_TRUSTED_ISSUERS`). The registered client stays the authority for agency and scopes:
a token's scopes are only ever a request, cut down to what its registration allows.

Users' delegated tokens (Entra ID's `scp` tokens, which Power BI's "Organizational account"
sign-in obtains) are app-only tokens' opposite: the presets refuse them, unless the issuer names
`feed_audiences`. A delegated token for one of those audiences is then read as a request for
`indicators:read` only, and only when its `scp` holds the feed's delegated scope (`feed_scope`,
`user_impersonation` by default, the scope Power Query asks for); its client is the app it was
issued to (`azp`/`appid`: Power BI's), registered here like any client, and its user (`oid`) is
kept for the audit trail. Which routes it opens is the API's business (the aggregate routes only).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from service.auth.feed_keys import FEED_SCOPE
from service.settings import IssuerPreset, Settings, TrustedIssuer

# RFC 9068 section 4: our own tokens are `at+jwt` (the `application/` prefix may be left out,
# RFC 7515 4.1.9; media types compare case-insensitively).
AT_JWT_TYPES: frozenset[str | None] = frozenset({"at+jwt", "application/at+jwt"})
# A provider without a preset may send plain JWTs or no `typ` at all, but never another kind of
# JWT (an ID token, a logout token...).
_GENERIC_TYPES: frozenset[str | None] = frozenset({None, "jwt", "application/jwt", *AT_JWT_TYPES})
_ENTRA_TYPES: frozenset[str | None] = frozenset({"jwt"})
# Keycloak signs access tokens `typ: JWT`, or `at+jwt` when a client is set to RFC 9068 tokens.
_KEYCLOAK_TYPES: frozenset[str | None] = frozenset({"jwt", *AT_JWT_TYPES})
DELEGATED_SCOPE_CLAIM = "scp"
"""Where a user's delegated token carries the permissions the user consented to (Entra ID)."""


@dataclass(frozen=True)
class IssuerProfile:
    """How one issuer's tokens are checked and read."""

    issuer: str
    audiences: frozenset[str]
    client_claims: tuple[str, ...] = ("client_id", "sub")
    """The first of these claims present names the client."""
    scope_claims: tuple[str, ...] = ("scope", "scp")
    """Each may be a space-separated string or a list of strings; their scopes are joined."""
    types: frozenset[str | None] = _GENERIC_TYPES
    """Accepted header `typ` values, lower case; None accepts a header without one."""
    required_claims: Mapping[str, frozenset[str]] = field(default_factory=dict)
    refused_claims: frozenset[str] = frozenset()
    jwks_url: str | None = None
    discovery_url: str | None = None
    """Where the JWKS URL is found when `jwks_url` is not given."""
    feed_audiences: frozenset[str] = frozenset()
    """Accepted `aud` values of users' delegated tokens; none: every delegated token is refused."""
    feed_scope: str = "user_impersonation"
    """The delegated scope (in `scp`) that lets a user's token read the feed."""
    user_claim: str | None = None
    """The claim naming a delegated token's user (Entra ID's `oid`); None: no delegated tokens."""


@dataclass(frozen=True)
class _Preset:
    client_claims: tuple[str, ...]
    scope_claims: tuple[str, ...]
    types: frozenset[str | None]
    required_claims: Mapping[str, frozenset[str]]
    refused_claims: frozenset[str]
    user_claim: str | None = None


_PRESETS: dict[IssuerPreset, _Preset] = {
    # Entra ID app-only tokens: the app roles granted to the calling app in `roles`. A user's
    # (delegated) token carries `scp`: it is refused, as this service's clients are machines,
    # except on the feed when the issuer names `feed_audiences` (the user in `oid`, an object id
    # that is the same for every app, unlike the pairwise `sub`).
    "entra-id-v1": _Preset(
        client_claims=("appid",),
        scope_claims=("roles",),
        types=_ENTRA_TYPES,
        required_claims={"ver": frozenset({"1.0"})},
        refused_claims=frozenset({DELEGATED_SCOPE_CLAIM}),
        user_claim="oid",
    ),
    "entra-id-v2": _Preset(
        client_claims=("azp",),
        scope_claims=("roles",),
        types=_ENTRA_TYPES,
        required_claims={"ver": frozenset({"2.0"})},
        refused_claims=frozenset({DELEGATED_SCOPE_CLAIM}),
        user_claim="oid",
    ),
    # Keycloak's ID and refresh tokens share the access token's signing key and header; only
    # the payload's `typ` tells them apart.
    "keycloak": _Preset(
        client_claims=("azp",),
        scope_claims=("scope",),
        types=_KEYCLOAK_TYPES,
        required_claims={"typ": frozenset({"Bearer"})},
        refused_claims=frozenset(),
    ),
}

_GENERIC = _Preset(
    client_claims=("client_id", "sub"),
    scope_claims=("scope", "scp"),
    types=_GENERIC_TYPES,
    required_claims={},
    refused_claims=frozenset(),
)


def discovery_url(issuer: str, preset: IssuerPreset | None = None) -> str:
    """Where an issuer's OpenID Provider metadata is (OpenID Connect Discovery 1.0, 4).

    Entra ID's v1 issuer (`https://sts.windows.net/{tenant}/`) is not where its metadata is
    served: that is the tenant's v1 endpoint at login.microsoftonline.com, whose document names
    the sts.windows.net issuer.
    """
    parts = urlsplit(issuer)
    if preset == "entra-id-v1" and parts.hostname == "sts.windows.net":
        tenant = parts.path.strip("/")
        return f"https://login.microsoftonline.com/{tenant}/.well-known/openid-configuration"
    return f"{issuer.rstrip('/')}/.well-known/openid-configuration"


def _profile(item: TrustedIssuer, default_audience: str) -> IssuerProfile:
    preset = _PRESETS[item.preset] if item.preset else _GENERIC
    types = (
        frozenset(value.lower() if value else None for value in item.typ)
        if item.typ is not None
        else preset.types
    )
    required: Mapping[str, frozenset[str]] = (
        {name: frozenset(values) for name, values in item.required_claims.items()}
        if item.required_claims is not None
        else preset.required_claims
    )
    return IssuerProfile(
        issuer=item.issuer,
        audiences=frozenset(item.audiences or [default_audience]),
        client_claims=tuple(item.client_claims or preset.client_claims),
        scope_claims=tuple(item.scope_claims or preset.scope_claims),
        types=types,
        required_claims=required,
        refused_claims=(
            frozenset(item.refused_claims)
            if item.refused_claims is not None
            else preset.refused_claims
        ),
        jwks_url=item.jwks_url,
        discovery_url=None if item.jwks_url else discovery_url(item.issuer, item.preset),
        feed_audiences=frozenset(item.feed_audiences or ()),
        feed_scope=item.feed_scope,
        user_claim=preset.user_claim,
    )


def builtin_profile(settings: Settings) -> IssuerProfile:
    """Our own issuer: RFC 9068 access tokens for our audience, the client in `client_id`."""
    return IssuerProfile(
        issuer=settings.issuer, audiences=frozenset({settings.audience}), types=AT_JWT_TYPES
    )


def trusted_issuer_profiles(settings: Settings) -> list[IssuerProfile]:
    """Every external issuer configured: `NEGLECT_TRUSTED_ISSUERS`, then the one-issuer shorthand
    `NEGLECT_EXTERNAL_ISSUER` (with `NEGLECT_EXTERNAL_JWKS_URL`, or discovered)."""
    items = list(settings.trusted_issuers)
    if settings.external_issuer:
        items.append(
            TrustedIssuer(issuer=settings.external_issuer, jwks_url=settings.external_jwks_url)
        )
    return [_profile(item, settings.audience) for item in items]


class TokenShapeError(ValueError):
    """A verified token that does not have its issuer's shape; the message says what is wrong."""


def _scopes_of(value: Any, claim: str) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [scope for item in value for scope in item.split()]
    raise TokenShapeError(f"the token's {claim} claim is malformed")


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says, read by its issuer's profile."""

    client_id: str
    scopes: list[str]
    user: str | None = None
    """The user of a delegated token (see `is_delegated`); None for an app-only token."""


def is_delegated(profile: IssuerProfile, claims: Mapping[str, Any]) -> bool:
    """Whether a verified token is to be read as a user's delegated token: it carries `scp` and
    its issuer accepts delegated tokens for the feed. Any other token carrying `scp` is read as
    an app-only token, and refused by the presets for carrying it."""
    return (
        bool(profile.feed_audiences)
        and profile.user_claim is not None
        and DELEGATED_SCOPE_CLAIM in claims
    )


def accepted_audiences(profile: IssuerProfile, claims: Mapping[str, Any]) -> frozenset[str]:
    """The `aud` values this token may carry: the feed's for a delegated token, else the API's."""
    return profile.feed_audiences if is_delegated(profile, claims) else profile.audiences


def _client_of(profile: IssuerProfile, claims: Mapping[str, Any]) -> str:
    for name in profile.client_claims:
        if name in claims:
            value = claims[name]
            if isinstance(value, str) and value:
                return value
            break
    raise TokenShapeError("the token names no client")


def read_claims(profile: IssuerProfile, claims: Mapping[str, Any]) -> TokenClaims:
    """The client a verified token names, the scopes it carries and, for a delegated token, its
    user, by its issuer's profile; `TokenShapeError` for a token of the wrong shape."""
    delegated = is_delegated(profile, claims)
    refused = sorted(
        name
        for name in profile.refused_claims
        if name in claims and not (delegated and name == DELEGATED_SCOPE_CLAIM)
    )
    if refused:
        raise TokenShapeError(f"the token carries {', '.join(refused)}: not an app-only token")
    for name, accepted in profile.required_claims.items():
        value = claims.get(name)
        if not isinstance(value, str) or value not in accepted:
            expected = " or ".join(sorted(accepted))
            raise TokenShapeError(f"the token's {name} claim is not {expected}")
    client_id = _client_of(profile, claims)
    if delegated and profile.user_claim is not None:
        return _read_delegated(profile, claims, client_id, profile.user_claim)
    scopes: dict[str, None] = {}
    for name in profile.scope_claims:
        if name in claims:
            scopes.update(dict.fromkeys(_scopes_of(claims[name], name)))
    return TokenClaims(client_id=client_id, scopes=list(scopes))


def _read_delegated(
    profile: IssuerProfile, claims: Mapping[str, Any], client_id: str, user_claim: str
) -> TokenClaims:
    """A user's delegated token: the feed's delegated scope asks for `indicators:read` and
    nothing else (the user's own app roles, in `roles`, are not read); without it, nothing."""
    user = claims.get(user_claim)
    if not isinstance(user, str) or not user:
        raise TokenShapeError(f"the delegated token names no user ({user_claim})")
    try:
        # Entra's object ids are GUIDs; the audit trail keeps the user as one.
        user = str(uuid.UUID(user))
    except ValueError as exc:
        raise TokenShapeError(f"the delegated token's {user_claim} is not an object id") from exc
    consented = _scopes_of(claims[DELEGATED_SCOPE_CLAIM], DELEGATED_SCOPE_CLAIM)
    scopes = [FEED_SCOPE] if profile.feed_scope in consented else []
    return TokenClaims(client_id=client_id, scopes=scopes, user=user)
