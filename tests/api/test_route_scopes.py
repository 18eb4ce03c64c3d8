"""Every route outside a short public list needs a token scope, and refuses a scope-less token
with 403 before it looks at anything else (SPEC 2.6)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from functools import cache

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import RouteContext, iter_route_contexts

from api.deps import authenticate, authenticate_reader, verify_token
from api.main import create_app
from service.settings import Settings
from tests.conftest import ClientMaker

PUBLIC_PATHS = frozenset(
    {
        "/health/live",
        "/health/ready",
        "/oauth/token",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/docs-assets",
        "/openapi.json",
    }
)

_PATH_PARAM = re.compile(r"{[^}]+}")


@cache
def _routes() -> tuple[RouteContext, ...]:
    """Every route as served, with router prefixes and router-level dependencies applied."""
    # The route table needs no database, so it can be read at collection time.
    return tuple(iter_route_contexts(create_app(Settings(database_url=None)).routes))


def _authenticate_dependants(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        if sub.call in (authenticate, authenticate_reader, verify_token):
            yield sub
        yield from _authenticate_dependants(sub)


def _required_scopes(route: RouteContext) -> frozenset[str]:
    """The scopes `authenticate` (or `verify_token`) demands on this route (empty: none, or no
    authentication)."""
    dependant = getattr(route, "dependant", None)
    if not isinstance(dependant, Dependant):
        return frozenset()
    scopes: set[str] = set()
    for sub in _authenticate_dependants(dependant):
        scopes.update(sub.parent_oauth_scopes or [])
        scopes.update(sub.own_oauth_scopes or [])
    return frozenset(scopes)


def _path(route: RouteContext) -> str:
    return route.path or repr(route.original_route)


def _protected_operations() -> list[tuple[str, str]]:
    operations = []
    for route in _routes():
        if _path(route) in PUBLIC_PATHS:
            continue
        for method in sorted(route.methods or {"GET"}):
            operations.append((method, _path(route)))
    return operations


def test_only_the_public_routes_go_without_a_scope() -> None:
    unscoped = {_path(route) for route in _routes() if not _required_scopes(route)}
    assert unscoped == PUBLIC_PATHS, (
        f"not public, yet no scope required: {sorted(unscoped - PUBLIC_PATHS)}; "
        f"public, yet missing or scoped: {sorted(PUBLIC_PATHS - unscoped)}"
    )


def test_the_scope_detection_sees_the_admin_scope_on_client_registration() -> None:
    [route] = [r for r in _routes() if r.path == "/v1/clients" and "POST" in (r.methods or ())]
    assert _required_scopes(route) == {"admin"}


PROTECTED_OPERATIONS = _protected_operations()


@pytest.mark.parametrize(
    ("method", "path"), PROTECTED_OPERATIONS, ids=[" ".join(op) for op in PROTECTED_OPERATIONS]
)
async def test_a_token_without_scopes_is_refused_with_403_first(
    client: httpx.AsyncClient, make_client: ClientMaker, method: str, path: str
) -> None:
    registered = await make_client(["indicators:read"], token_scopes=[])
    # Any id will do: the scope check must answer before the route looks anything up or
    # validates a parameter, header or body.
    url = _PATH_PARAM.sub(lambda _: str(uuid.uuid4()), path)
    response = await client.request(method, url, headers=registered.headers)
    assert response.status_code == 403, f"{method} {path}: {response.status_code} {response.text}"
    if path.startswith("/odata"):  # the feed's errors are OData errors
        assert response.json()["error"]["code"] == "insufficient-scope"
    else:
        assert response.headers["content-type"].startswith("application/problem+json")
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_every_webhook_route_needs_the_webhooks_manage_scope() -> None:
    webhook_routes = [r for r in _routes() if (r.path or "").startswith("/v1/webhooks")]
    assert len(webhook_routes) == 7
    assert all(_required_scopes(route) == {"webhooks:manage"} for route in webhook_routes)
