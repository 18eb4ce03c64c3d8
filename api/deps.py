"""Annotated dependencies shared by every route."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import AsyncIterator
from typing import Annotated, Final

from fastapi import Depends, Header, Query, Request, Response, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2, SecurityScopes
from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import record_access
from service.auth.caller import Caller
from service.auth.clients import check_client
from service.auth.feed_keys import FEED_SCOPE, find_feed_key_holder
from service.auth.scopes import SCOPES
from service.auth.tokens import TokenVerifier, VerifiedToken
from service.db import SessionFactory, transaction
from service.errors import AuthenticationFailed, InsufficientScope, RateLimited
from service.logs import request_id_var
from service.models import ApiClient
from service.pagination import DEFAULT_LIMIT, MAX_CURSOR_LENGTH, MAX_LIMIT, PageRequest
from service.rate_limits import RateLimits
from service.replica import LAG_KEY, ReadSessions


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, committed before the response is sent (scope="function")."""
    factory: SessionFactory = request.app.state.session_factory
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

DATA_LAG_HEADER: Final = "X-Data-Lag-Seconds"
DATA_LAG_DOC: Final = {
    DATA_LAG_HEADER: {
        "description": "At most how many seconds behind the primary database this answer's "
        "data is: 0.0 from the primary; from a read replica, its lag when last measured (every "
        "second) plus the time since",
        "schema": {"type": "string", "example": "0.4"},
    }
}


def data_lag(session: AsyncSession) -> str:
    """The `X-Data-Lag-Seconds` value for what `session` read, rounded up to a tenth: it is a
    bound, so 0.04 s behind is "0.1", never "0.0" (which only the primary says)."""
    return f"{math.ceil(float(session.info.get(LAG_KEY, 0.0)) * 10) / 10:.1f}"


async def get_read_session(request: Request, response: Response) -> AsyncIterator[AsyncSession]:
    """A READ ONLY session, on the read replica when one is configured and close enough behind
    (`service.replica`). Sets `X-Data-Lag-Seconds` on the answer (a route that returns its own
    Response copies it)."""
    reads: ReadSessions = request.app.state.reads
    async with reads.session() as session:
        response.headers[DATA_LAG_HEADER] = data_lag(session)
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]

oauth2_scheme = OAuth2(
    flows=OAuthFlows(
        clientCredentials=OAuthFlowClientCredentials(tokenUrl="/oauth/token", scopes=SCOPES)
    ),
    scheme_name="oauth2",
    auto_error=False,
)


def _access_reason(raw: str | None) -> str | None:
    if raw is None:
        return None
    cleaned = "".join(char for char in raw if char.isprintable())[:500].strip()
    return cleaned or None


async def _verified_bearer(request: Request, authorization: str | None) -> VerifiedToken:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("send an OAuth 2.0 bearer token")
    verifier: TokenVerifier = request.app.state.token_verifier
    return await verifier.verify(token.strip())


def access_reason(request: Request) -> str | None:
    """`X-Access-Reason`, printable and at most 500 characters, for the audit trail."""
    return _access_reason(request.headers.get("X-Access-Reason"))


DELEGATED_ONLY_ON_AGGREGATES: Final = (
    "a user's delegated token opens only the indicators and the OData feed"
)


def _refuse_delegated(verified: VerifiedToken) -> None:
    """Only machine clients' tokens open the routes of personal data: a user's delegated token
    (Power BI's "Organizational account") is for the aggregate routes (`authenticate_reader`)."""
    if verified.user is not None:
        raise AuthenticationFailed(DELEGATED_ONLY_ON_AGGREGATES)


async def authenticate(
    security_scopes: SecurityScopes,
    request: Request,
    session: SessionDep,
    authorization: Annotated[str | None, Depends(oauth2_scheme)],
) -> Caller:
    """The registered, enabled client behind a valid bearer token, holding every required scope."""
    verified = await _verified_bearer(request, authorization)
    _refuse_delegated(verified)
    return await _registered_caller(security_scopes, request, session, verified)


async def _registered_caller(
    security_scopes: SecurityScopes,
    request: Request,
    session: AsyncSession,
    verified: VerifiedToken,
) -> Caller:
    """The registered, enabled client a verified token names, holding every required scope."""
    try:
        client = await check_client(
            session,
            client_id=verified.client_id,
            issuer=verified.issuer,
            default_issuer=request.app.state.settings.issuer,
            required_scopes=security_scopes.scopes,
            token_scopes=verified.scopes,
        )
    except InsufficientScope:
        # A registered client asking beyond its scopes: known, so its refusal is audited.
        request.state.caller = await _refused_caller(session, request, verified)
        raise
    caller = Caller(
        client_id=verified.client_id,
        agency_type=client.agency_type,
        agency_name=client.agency_name,
        scopes=client.granted_scopes,
        request_id=request_id_var.get(),
        access_reason=access_reason(request),
    )
    # Known from here on, so that a refusal of this request can be audited.
    request.state.caller = caller
    return caller


async def _refused_caller(
    session: AsyncSession, request: Request, verified: VerifiedToken
) -> Caller:
    """Who was refused, for the `denied` audit event: the client and its agency. It is granted
    nothing (the scope rule is `neglect_check_client`'s alone, and the request goes no further)."""
    client = await session.get(ApiClient, verified.client_id)
    if client is None:  # pragma: no cover - check_client found it a moment ago
        raise AuthenticationFailed("the client is not registered or is disabled")
    return Caller(
        client_id=client.client_id,
        agency_type=client.agency_type,
        agency_name=client.agency_name,
        scopes=frozenset(),
        request_id=request_id_var.get(),
        access_reason=access_reason(request),
    )


async def verify_token(
    security_scopes: SecurityScopes,
    request: Request,
    authorization: Annotated[str | None, Depends(oauth2_scheme)],
) -> VerifiedToken:
    """A valid bearer token granting every required scope, for a route whose database function
    checks the registered client itself (in the same round trip as its work)."""
    verified = await _verified_bearer(request, authorization)
    _refuse_delegated(verified)
    missing = [scope for scope in security_scopes.scopes if scope not in verified.scopes]
    if missing:
        raise InsufficientScope(
            f"this needs the scope {' '.join(missing)}", scope=" ".join(security_scopes.scopes)
        )
    return verified


async def enforce_api_quota(request: Request) -> None:
    """Spend one request of the calling client's quota; 429 with `Retry-After` once it is used up.

    Every `/v1` route runs this before its own authentication, keyed by the token's client: a
    request without a valid token is left to that authentication (401). A verified token is
    remembered by the verifier, so the second look at it costs a dictionary lookup.
    """
    try:
        verified = await _verified_bearer(request, request.headers.get("Authorization"))
    except AuthenticationFailed:
        return
    limits: RateLimits = request.app.state.rate_limits
    refusal = await limits.api_refusal(verified.client_id)
    if refusal is not None:
        raise RateLimited(refusal.reason, refusal.retry_after_s)


DELEGATED_USER: Final = "delegated_user"
"""The audit trail's `resource_type` for a use of a user's delegated token (the id: its user)."""
FEED_KEY_PARAMETER: Final = "feed_key"
"""The query parameter Power Query's "Web API" credential fills in (`ApiKeyName="feed_key"`)."""


def _basic_credentials(credentials: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise AuthenticationFailed("the Basic credentials are not base64 of id:key") from exc
    client_id, colon, key = decoded.partition(":")
    if not colon:
        raise AuthenticationFailed("the Basic credentials are not base64 of id:key")
    return client_id, key


async def _feed_key_caller(
    security_scopes: SecurityScopes,
    request: Request,
    session: AsyncSession,
    key: str,
    client_id: str | None,
) -> Caller:
    holder = await find_feed_key_holder(session, key, client_id)
    if holder is None:
        raise AuthenticationFailed(
            "the feed key is unknown or revoked, or its client is disabled or may not read "
            "indicators"
        )
    missing = [scope for scope in security_scopes.scopes if scope != FEED_SCOPE]
    if missing:
        raise InsufficientScope(
            "a feed key only reads indicators", scope=" ".join(security_scopes.scopes)
        )
    limits: RateLimits = request.app.state.rate_limits
    refusal = await limits.api_refusal(holder.client_id)
    if refusal is not None:
        raise RateLimited(refusal.reason, refusal.retry_after_s)
    caller = Caller(
        client_id=holder.client_id,
        agency_type=holder.agency_type,
        agency_name=holder.agency_name,
        scopes=frozenset({FEED_SCOPE}),
        request_id=request_id_var.get(),
        access_reason=access_reason(request),
    )
    await _audit_use(request, caller, "feed_key", holder.key_id)
    return caller


async def _audit_use(request: Request, caller: Caller, credential: str, identifier: str) -> None:
    """Audit one use of a reader's credential (a feed key by its id, a user's delegated token by
    the user's id), in its own transaction: a use is on the trail even when the request then
    fails."""
    factory: SessionFactory = request.app.state.session_factory
    async with transaction(factory) as audit_session:
        await record_access(audit_session, caller, "read", credential, identifier)


async def authenticate_reader(
    security_scopes: SecurityScopes,
    request: Request,
    session: SessionDep,
    authorization: Annotated[str | None, Depends(oauth2_scheme)],
) -> Caller:
    """The caller of an aggregate route (the indicators and the OData feed): a bearer token, as
    `authenticate` checks it, or a feed key, sent as the `feed_key` query parameter (Power
    Query's Web API key) or as HTTP Basic with the client id as user name. A feed key grants
    `indicators:read` only, and every use of one is audited. So does a user's delegated token
    (Power BI's "Organizational account", `service.auth.issuers`), whose client is the app it
    was issued to, registered like any client; every use names the user in the audit trail."""
    scheme, _, credentials = (authorization or "").partition(" ")
    keys_in_query = request.query_params.getlist(FEED_KEY_PARAMETER)
    basic = scheme.lower() == "basic"
    if keys_in_query and (authorization or len(keys_in_query) > 1):
        raise AuthenticationFailed("send one credential: a feed key or an Authorization header")
    if keys_in_query:
        return await _feed_key_caller(security_scopes, request, session, keys_in_query[0], None)
    if basic:
        client_id, key = _basic_credentials(credentials)
        return await _feed_key_caller(security_scopes, request, session, key, client_id)
    verified = await _verified_bearer(request, authorization)
    caller = await _registered_caller(security_scopes, request, session, verified)
    if verified.user is not None:
        await _audit_use(request, caller, DELEGATED_USER, verified.user)
    return caller


AdminDep = Annotated[Caller, Security(authenticate, scopes=["admin"])]

IdempotencyKeyDep = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Required on creates: a retry with the same key and body replays the answer",
        max_length=200,
    ),
]


def _page_request(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page (at most {MAX_LIMIT})")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_LENGTH, description="`next_cursor` of the previous page"),
    ] = None,
) -> PageRequest:
    return PageRequest(limit=limit, cursor=cursor)


PageDep = Annotated[PageRequest, Depends(_page_request)]
"""`limit` and `cursor` of every list route."""
