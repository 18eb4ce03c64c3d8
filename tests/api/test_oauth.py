"""The built-in authorization server and the resource server's token checks (SPEC 2.6)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jose import jwt

from api.main import create_app
from service.auth.clients import create_client, disable_client
from service.auth.keys import KeyRing
from service.auth.tokens import TokenVerifier
from service.db import transaction
from service.errors import AuthenticationFailed
from service.settings import Settings
from tests.conftest import TEST_AUDIENCE, TEST_ISSUER, TEST_KEY_ENCRYPTION_KEY, ClientMaker


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _claims(client_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": TEST_ISSUER,
        "aud": TEST_AUDIENCE,
        "sub": client_id,
        "client_id": client_id,
        "scope": "audit:read",
        "iat": now,
        "exp": now + 300,
        "jti": "j1",
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


async def _sign(app: FastAPI, claims: dict[str, Any], **headers: Any) -> str:
    ring: KeyRing = await app.state.key_ring()
    token: str = jwt.encode(
        claims,
        ring.active_private_pem,
        algorithm="RS256",
        headers={"kid": ring.active_kid, "typ": "at+jwt", **headers},
    )
    return token


async def test_an_oauth_library_gets_a_token_with_basic_auth_and_calls_the_api(
    app: FastAPI, make_client: ClientMaker
) -> None:
    registered = await make_client(["audit:read", "admin"])
    oauth = AsyncOAuth2Client(
        client_id=registered.client_id,
        client_secret=registered.secret,
        scope="audit:read",
        token_endpoint_auth_method="client_secret_basic",
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
    )
    async with oauth:
        token = await oauth.fetch_token("http://test/oauth/token", grant_type="client_credentials")
        assert token["token_type"] == "Bearer"
        assert token["scope"] == "audit:read"
        assert token["expires_in"] == 900
        response = await oauth.get("http://test/v1/audit-events")
    assert response.status_code == 200, response.text
    assert "items" in response.json()


async def test_client_secret_post_is_accepted_and_the_token_is_an_at_jwt(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["indicators:read"])
    response = await client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": registered.client_id,
            "client_secret": registered.secret,
        },
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    token = response.json()["access_token"]
    header = jwt.get_unverified_header(token)
    claims = jwt.get_unverified_claims(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    assert claims["exp"] - claims["iat"] == 900
    assert {"iss", "aud", "sub", "client_id", "scope", "iat", "exp", "jti"} <= set(claims)


async def test_a_wrong_secret_is_invalid_client(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["indicators:read"])
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(registered.client_id, "not-the-secret"),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_scope_outside_the_clients_allowance_is_refused(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["indicators:read"])
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "indicators:read admin"},
        auth=(registered.client_id, registered.secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


async def test_an_unsupported_grant_is_refused(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["indicators:read"])
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "password"},
        auth=(registered.client_id, registered.secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


async def test_a_disabled_client_gets_no_token(
    app: FastAPI, client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["indicators:read"])
    async with transaction(app.state.session_factory) as session:
        await disable_client(session, registered.client_id)
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(registered.client_id, registered.secret or ""),
    )
    assert response.status_code == 401


async def test_unknown_disabled_and_wrong_secret_clients_get_the_same_answer(
    app: FastAPI, client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    wrong = await make_client(["indicators:read"])
    disabled = await make_client(["indicators:read"])
    async with transaction(app.state.session_factory) as session:
        await disable_client(session, disabled.client_id)
    answers = []
    for client_id, secret in [
        ("nsc_never_registered", "whatever"),
        (disabled.client_id, disabled.secret or ""),
        (wrong.client_id, "not-the-secret"),
    ]:
        response = await client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        body = response.json()
        answers.append((response.status_code, body["error"], body["error_description"]))
    assert (
        answers == [(401, "invalid_client", "unknown client, wrong secret or disabled client")] * 3
    )


async def test_a_missing_grant_type_is_an_rfc_6749_invalid_request(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["indicators:read"])
    response = await client.post(
        "/oauth/token", data={}, auth=(registered.client_id, registered.secret or "")
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    assert "grant_type" in body["error_description"]
    assert response.headers["cache-control"] == "no-store"


async def test_a_token_request_parameter_over_its_length_is_an_invalid_request(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["indicators:read"])
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "x" * 2001},
        auth=(registered.client_id, registered.secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "x" * 50 not in response.text


async def test_jwks_and_metadata_describe_the_issuer(client: httpx.AsyncClient) -> None:
    jwks = (await client.get("/.well-known/jwks.json")).json()
    metadata = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert jwks["keys"][0]["kty"] == "RSA"
    assert "d" not in jwks["keys"][0]
    assert metadata["issuer"] == TEST_ISSUER
    assert metadata["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]


def _other_private_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def _call(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/v1/audit-events", headers={"Authorization": f"Bearer {token}"})


async def _assert_rejected(client: httpx.AsyncClient, token: str) -> None:
    response = await _call(client, token)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_well_formed_token_is_accepted(
    app: FastAPI, client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["audit:read"])
    token = await _sign(app, await _claims(registered.client_id))
    assert (await _call(client, token)).status_code == 200


async def test_an_unsigned_alg_none_token_is_rejected(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["audit:read"])
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(await _claims(registered.client_id)).encode())
    await _assert_rejected(client, f"{header}.{payload}.")


async def test_an_hs256_token_signed_with_the_public_key_is_rejected(
    app: FastAPI, client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["audit:read"])
    ring: KeyRing = await app.state.key_ring()
    public = json.dumps(ring.public_jwks[ring.active_kid]).encode()
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": ring.active_kid}).encode())
    payload = _b64(json.dumps(await _claims(registered.client_id)).encode())
    import hashlib
    import hmac

    signature = _b64(hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    await _assert_rejected(client, f"{header}.{payload}.{signature}")


@pytest.mark.parametrize(
    ("case", "overrides"),
    [
        ("expired", {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}),
        ("not yet valid", {"nbf": int(time.time()) + 3600}),
        ("issued in the future", {"iat": int(time.time()) + 3600}),
        ("wrong iss", {"iss": "https://evil.example"}),
        ("wrong aud", {"aud": "another-service"}),
        ("missing exp", {"exp": None}),
        ("missing iss", {"iss": None}),
        ("missing aud", {"aud": None}),
        ("missing sub", {"sub": None}),
        ("missing iat", {"iat": None}),
    ],
)
async def test_a_token_with_bad_claims_is_rejected(
    app: FastAPI,
    client: httpx.AsyncClient,
    make_client: ClientMaker,
    case: str,
    overrides: dict[str, Any],
) -> None:
    registered = await make_client(["audit:read"])
    token = await _sign(app, await _claims(registered.client_id, **overrides))
    await _assert_rejected(client, token)


@pytest.mark.parametrize("typ", ["JWT", "jwt", "application/jwt", None])
async def test_a_token_of_our_issuer_that_is_not_typed_at_jwt_is_rejected(
    app: FastAPI, client: httpx.AsyncClient, make_client: ClientMaker, typ: str | None
) -> None:
    registered = await make_client(["audit:read"])
    token = await _sign(app, await _claims(registered.client_id), typ=typ)
    await _assert_rejected(client, token)


@pytest.mark.parametrize("typ", ["application/at+jwt", "AT+JWT"])
async def test_the_at_jwt_type_is_matched_as_a_media_type(
    app: FastAPI, client: httpx.AsyncClient, make_client: ClientMaker, typ: str
) -> None:
    registered = await make_client(["audit:read"])
    token = await _sign(app, await _claims(registered.client_id), typ=typ)
    assert (await _call(client, token)).status_code == 200


async def test_a_token_with_a_crit_header_is_rejected(
    app: FastAPI, client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["audit:read"])
    token = await _sign(app, await _claims(registered.client_id), crit=["exp"])
    await _assert_rejected(client, token)


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", str(int(time.time()) + 300)),
        ("iat", str(int(time.time()))),
        ("nbf", str(int(time.time()) - 10)),
        ("exp", True),
    ],
)
async def test_a_token_whose_times_are_not_numbers_is_rejected(
    app: FastAPI,
    client: httpx.AsyncClient,
    make_client: ClientMaker,
    claim: str,
    value: object,
) -> None:
    registered = await make_client(["audit:read"])
    token = await _sign(app, await _claims(registered.client_id, **{claim: value}))
    await _assert_rejected(client, token)


async def test_a_token_naming_an_unknown_kid_is_rejected(
    app: FastAPI, client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["audit:read"])
    ring: KeyRing = await app.state.key_ring()
    token = jwt.encode(
        await _claims(registered.client_id),
        ring.active_private_pem,
        algorithm="RS256",
        headers={"kid": "no-such-key", "typ": "at+jwt"},
    )
    await _assert_rejected(client, token)


async def test_a_token_signed_by_another_key_is_rejected(
    app: FastAPI, client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["audit:read"])
    ring: KeyRing = await app.state.key_ring()
    token = jwt.encode(
        await _claims(registered.client_id),
        _other_private_pem(),
        algorithm="RS256",
        headers={"kid": ring.active_kid, "typ": "at+jwt"},
    )
    await _assert_rejected(client, token)


async def test_a_token_of_an_unregistered_client_is_rejected(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    token = await _sign(app, await _claims("nsc_never_registered"))
    await _assert_rejected(client, token)


async def test_a_token_of_a_disabled_client_is_rejected(
    app: FastAPI, client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["audit:read"])
    async with transaction(app.state.session_factory) as session:
        await disable_client(session, registered.client_id)
    await _assert_rejected(client, registered.token)


async def test_no_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/audit-events")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_valid_token_without_the_scope_is_403(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(["indicators:read"])
    response = await _call(client, registered.token)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_a_token_scope_the_client_is_no_longer_allowed_is_not_granted(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    registered = await make_client(
        ["indicators:read"], token_scopes=["indicators:read", "audit:read"]
    )
    assert (await _call(client, registered.token)).status_code == 403


class _CountingRing:
    """The app's real key ring, counting how often a verification asks it for a key."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.calls = 0

    async def key(self, kid: str) -> dict[str, Any] | None:
        self.calls += 1
        key: dict[str, Any] | None = await self.app.state.key_ring.key(kid)
        return key


async def test_a_verified_token_is_remembered_and_not_checked_again(
    app: FastAPI, settings: Settings, make_client: ClientMaker
) -> None:
    registered = await make_client(["audit:read"])
    token = await _sign(app, await _claims(registered.client_id))
    ring = _CountingRing(app)
    verifier = TokenVerifier(settings, ring, None)
    first = await verifier.verify(token)
    second = await verifier.verify(token)
    assert first == second
    assert first.client_id == registered.client_id
    assert ring.calls == 1


async def test_a_remembered_token_is_refused_once_it_expires(
    app: FastAPI, settings: Settings, make_client: ClientMaker
) -> None:
    registered = await make_client(["audit:read"])
    now = int(time.time())
    token = await _sign(app, await _claims(registered.client_id, iat=now, exp=now + 1))
    verifier = TokenVerifier(
        settings.model_copy(update={"jwt_leeway_s": 0}), _CountingRing(app), None
    )
    assert (await verifier.verify(token)).client_id == registered.client_id
    # python-jose compares whole seconds: exp is past once the clock reads exp + 1.
    await asyncio.sleep(now + 2.05 - time.time())
    with pytest.raises(AuthenticationFailed):
        await verifier.verify(token)


async def test_the_metadata_and_our_tokens_follow_the_public_url(database_url: str) -> None:
    settings = Settings(
        public_url="https://neglect.northtown.example/",
        audience=TEST_AUDIENCE,
        key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
    )
    application = create_app(settings, database_url)
    async with application.router.lifespan_context(application):
        async with transaction(application.state.session_factory) as session:
            created = await create_client(
                session,
                name="MIS",
                agency_type="school",
                agency_name="Northtown Primary",
                scopes=["audit:read"],
            )
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            metadata = (await http.get("/.well-known/oauth-authorization-server")).json()
            issued = await http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(created.client.client_id, created.secret or ""),
            )
            token = issued.json()["access_token"]
            called = await http.get(
                "/v1/audit-events", headers={"Authorization": f"Bearer {token}"}
            )

    assert metadata["issuer"] == "https://neglect.northtown.example"
    assert metadata["token_endpoint"] == "https://neglect.northtown.example/oauth/token"
    assert metadata["jwks_uri"] == "https://neglect.northtown.example/.well-known/jwks.json"
    assert jwt.get_unverified_claims(token)["iss"] == "https://neglect.northtown.example"
    assert called.status_code == 200, called.text
