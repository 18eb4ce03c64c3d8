"""The built-in authorization server: client-credentials tokens, JWKS and metadata (public)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from schemas.examples import TOKEN_REQUEST_EXAMPLE
from service.auth.clients import client_secret_matches, get_client
from service.auth.keys import ALGORITHM, KeyRing, issue_access_token
from service.auth.scopes import SCOPES, parse_scopes
from service.errors import OAuthError
from service.rate_limits import RateLimits
from service.settings import Settings

from .deps import SessionDep


class _OAuthRoute(APIRoute):
    """RFC 6749 section 5.2: a malformed token request (a missing `grant_type`, a parameter over
    its length) is `invalid_request` with the `error` member, not a 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                # Field names and messages only: never the input, which may be a secret.
                fields = "; ".join(
                    f"{error['loc'][-1]}: {error['msg']}" for error in exc.errors() if error["loc"]
                )
                raise OAuthError("invalid_request", fields or "malformed request") from exc

        return handle


router = APIRouter(tags=["oauth"], route_class=_OAuthRoute)

_OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "RFC 6749 error (`error` member), `invalid_request` for a malformed request",
        "content": {"application/problem+json": {}},
    },
    401: {
        "description": "Client authentication failed",
        "content": {"application/problem+json": {}},
    },
    429: {
        "description": "Too many failed token requests from this client id or address "
        "(`error`: `temporarily_unavailable`); retry after `Retry-After` seconds",
        "content": {"application/problem+json": {}},
    },
}

# Longer than any client id we issue or register (64): not worth a counter of its own.
_MAX_CLIENT_ID = 100


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client", "malformed Basic credentials", 401) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "malformed Basic credentials", 401)
    # RFC 6749 2.3.1: both parts are form-urlencoded before base64.
    client_id = unquote(client_id.replace("+", " "))
    if len(client_id) > _MAX_CLIENT_ID:
        raise OAuthError("invalid_client", "malformed Basic credentials", 401)
    return client_id, unquote(secret.replace("+", " "))


async def _refuse_when_limited(limits: RateLimits, client_id: str | None, address: str) -> None:
    refusal = await limits.token_refusal(client_id, address)
    if refusal is not None:
        raise OAuthError(
            "temporarily_unavailable", refusal.reason, 429, retry_after_s=refusal.retry_after_s
        )


@router.post(
    "/oauth/token",
    responses=_OAUTH_ERRORS,
    # Form fields have no model to carry it; with HTTP Basic credentials this succeeds.
    openapi_extra={
        "requestBody": {
            "content": {"application/x-www-form-urlencoded": {"example": TOKEN_REQUEST_EXAMPLE}}
        }
    },
)
async def issue_token(
    request: Request,
    session: SessionDep,
    grant_type: Annotated[str, Form(max_length=100)],
    scope: Annotated[str | None, Form(max_length=2000)] = None,
    client_id: Annotated[str | None, Form(max_length=_MAX_CLIENT_ID)] = None,
    client_secret: Annotated[str | None, Form(max_length=200)] = None,
) -> JSONResponse:
    """Issue a 15-minute access token for a client-credentials grant."""
    limits: RateLimits = request.app.state.rate_limits
    # The peer, or the client a trusted proxy names (uvicorn's FORWARDED_ALLOW_IPS).
    address = request.client.host if request.client else "unknown"
    try:
        basic = _basic_credentials(request.headers.get("Authorization"))
    except OAuthError:
        await _refuse_when_limited(limits, None, address)
        await limits.record_token_failure(None, address)
        raise
    if basic and (client_secret is not None):
        raise OAuthError("invalid_request", "use one client authentication method, not two")
    if basic:
        client_id, client_secret = basic
    await _refuse_when_limited(limits, client_id, address)
    if not client_id or client_secret is None:
        await limits.record_token_failure(client_id, address)
        raise OAuthError("invalid_client", "client authentication is required", 401)
    if grant_type != "client_credentials":
        raise OAuthError("unsupported_grant_type", "only client_credentials is supported")
    client = await get_client(session, client_id)
    # scrypt takes milliseconds of CPU: keep it off the event loop.
    matched = await asyncio.to_thread(client_secret_matches, client, client_secret)
    if client is None or not matched:
        await limits.record_token_failure(client_id, address)
        raise OAuthError("invalid_client", "unknown client, wrong secret or disabled client", 401)
    requested = parse_scopes(scope) if scope is not None else list(client.allowed_scopes)
    refused = [item for item in requested if item not in client.allowed_scopes]
    if refused or not requested:
        raise OAuthError(
            "invalid_scope", f"scopes not allowed for this client: {' '.join(refused)}"
        )
    settings: Settings = request.app.state.settings
    ring: KeyRing = await request.app.state.key_ring()
    token = issue_access_token(
        ring,
        issuer=settings.issuer,
        audience=settings.audience,
        client_id=client.client_id,
        scopes=requested,
        ttl_s=settings.token_ttl_s,
    )
    return JSONResponse(
        {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": settings.token_ttl_s,
            "scope": " ".join(requested),
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


@router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> dict[str, list[dict[str, Any]]]:
    """The public keys that verify our tokens."""
    ring: KeyRing = await request.app.state.key_ring()
    return ring.jwks()


@router.get("/.well-known/oauth-authorization-server")
async def authorization_server_metadata(request: Request) -> dict[str, Any]:
    """RFC 8414 metadata of the built-in authorization server."""
    settings: Settings = request.app.state.settings
    return {
        "issuer": settings.issuer,
        "token_endpoint": f"{settings.base_url}/oauth/token",
        "jwks_uri": f"{settings.base_url}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_signing_alg_values_supported": [ALGORITHM],
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["token"],
    }
