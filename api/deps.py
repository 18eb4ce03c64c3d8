"""Annotated dependencies shared by every route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2, SecurityScopes
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.caller import Caller
from service.auth.clients import check_client
from service.auth.scopes import SCOPES
from service.auth.tokens import TokenVerifier, VerifiedToken
from service.db import SessionFactory
from service.errors import AuthenticationFailed, InsufficientScope, RateLimited
from service.logs import request_id_var
from service.models import ApiClient
from service.pagination import DEFAULT_LIMIT, MAX_CURSOR_LENGTH, MAX_LIMIT, PageRequest
from service.rate_limits import RateLimits


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


async def authenticate(
    security_scopes: SecurityScopes,
    request: Request,
    session: SessionDep,
    authorization: Annotated[str | None, Depends(oauth2_scheme)],
) -> Caller:
    """The registered, enabled client behind a valid bearer token, holding every required scope."""
    verified = await _verified_bearer(request, authorization)
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
    client = await session.get(ApiClient, verified.client_id)
    if client is None:  # pragma: no cover - check_client found it a moment ago
        raise AuthenticationFailed("the client is not registered or is disabled")
    return Caller(
        client_id=client.client_id,
        agency_type=client.agency_type,
        agency_name=client.agency_name,
        scopes=frozenset(verified.scopes) & frozenset(client.allowed_scopes),
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
