"""The built-in authorization server: client-credentials tokens, JWKS and metadata (public)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse

from service.auth.clients import get_client, verify_secret
from service.auth.keys import ALGORITHM, KeyRing, issue_access_token
from service.auth.scopes import SCOPES, parse_scopes
from service.errors import OAuthError
from service.settings import Settings

from .deps import SessionDep

router = APIRouter(tags=["oauth"])

_OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "RFC 6749 error (`error` member)",
        "content": {"application/problem+json": {}},
    },
    401: {
        "description": "Client authentication failed",
        "content": {"application/problem+json": {}},
    },
}


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
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


@router.post("/oauth/token", responses=_OAUTH_ERRORS)
async def issue_token(
    request: Request,
    session: SessionDep,
    grant_type: Annotated[str, Form(max_length=100)],
    scope: Annotated[str | None, Form(max_length=2000)] = None,
    client_id: Annotated[str | None, Form(max_length=100)] = None,
    client_secret: Annotated[str | None, Form(max_length=200)] = None,
) -> JSONResponse:
    """Issue a 15-minute access token for a client-credentials grant."""
    basic = _basic_credentials(request.headers.get("Authorization"))
    if basic and (client_secret is not None):
        raise OAuthError("invalid_request", "use one client authentication method, not two")
    if basic:
        client_id, client_secret = basic
    if not client_id or client_secret is None:
        raise OAuthError("invalid_client", "client authentication is required", 401)
    if grant_type != "client_credentials":
        raise OAuthError("unsupported_grant_type", "only client_credentials is supported")
    client = await get_client(session, client_id)
    if (
        client is None
        or not client.enabled
        or client.secret_hash is None
        # scrypt takes milliseconds of CPU: keep it off the event loop.
        or not await asyncio.to_thread(verify_secret, client_secret, client.secret_hash)
    ):
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
        "token_endpoint": f"{settings.issuer}/oauth/token",
        "jwks_uri": f"{settings.issuer}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_signing_alg_values_supported": [ALGORITHM],
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["token"],
    }
