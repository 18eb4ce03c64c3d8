"""Tokens from an external identity provider, verified against its JWKS URL (SPEC 2.6)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI
from jose import jwk, jwt

from api.main import create_app
from service.auth.clients import create_client
from service.db import transaction
from service.settings import Settings
from tests.conftest import (
    TEST_AUDIENCE,
    TEST_ISSUER,
    TEST_KEY_ENCRYPTION_KEY,
    assert_errors_are_problems,
)

EXTERNAL_ISSUER = "https://idp.council.example"


@dataclass
class JwksServer:
    """A real HTTP server on loopback publishing a JWKS, counting fetches."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0
    failing: bool = False
    url: str = ""


def _key_pair(kid: str) -> tuple[str, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = jwk.construct(pem, "RS256").public_key().to_dict()
    public.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return pem, public


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    state = JwksServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits += 1
            if state.failing:
                self.send_response(500)
                self.end_headers()
                return
            body = json.dumps({"keys": state.keys}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
async def external_app(
    jwks_server: JwksServer, runtime_database_url: str
) -> AsyncIterator[FastAPI]:
    settings = Settings(
        issuer=TEST_ISSUER,
        audience=TEST_AUDIENCE,
        external_issuer=EXTERNAL_ISSUER,
        external_jwks_url=jwks_server.url,
        jwks_refetch_interval_s=60,
        key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
    )
    application = create_app(settings, runtime_database_url)
    async with application.router.lifespan_context(application):
        yield application


async def _register_external_client(app: FastAPI, client_id: str) -> None:
    async with transaction(app.state.session_factory) as session:
        await create_client(
            session,
            name="Council case system",
            agency_type="local_authority",
            agency_name="Northtown Council",
            scopes=["audit:read"],
            issuer=EXTERNAL_ISSUER,
            client_id=client_id,
        )


def _token(pem: str, kid: str, client_id: str, **headers: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": EXTERNAL_ISSUER,
        "aud": TEST_AUDIENCE,
        "sub": client_id,
        "client_id": client_id,
        "scope": "audit:read",
        "iat": now,
        "exp": now + 300,
    }
    token: str = jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid, **headers})
    return token


async def _get(app: FastAPI, token: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://test",
        event_hooks={"response": [assert_errors_are_problems]},
    ) as http:
        return await http.get("/v1/audit-events", headers={"Authorization": f"Bearer {token}"})


async def test_a_token_from_the_external_issuer_is_verified_with_its_jwks(
    external_app: FastAPI, jwks_server: JwksServer
) -> None:
    pem, public = _key_pair("ext-1")
    jwks_server.keys = [public]
    client_id = f"ext-{time.time_ns()}"
    await _register_external_client(external_app, client_id)
    response = await _get(external_app, _token(pem, "ext-1", client_id))
    assert response.status_code == 200, response.text


async def test_an_unknown_kid_is_refetched_at_most_once_a_minute(
    external_app: FastAPI, jwks_server: JwksServer
) -> None:
    pem, public = _key_pair("ext-2")
    jwks_server.keys = [public]
    client_id = f"ext-{time.time_ns()}"
    await _register_external_client(external_app, client_id)
    assert (await _get(external_app, _token(pem, "ext-2", client_id))).status_code == 200
    hits_after_first = jwks_server.hits
    other_pem, _ = _key_pair("rotated")
    for _ in range(3):
        response = await _get(external_app, _token(other_pem, "rotated", client_id))
        assert response.status_code == 401
    assert jwks_server.hits == hits_after_first


async def test_the_external_issuer_fails_closed_when_its_jwks_cannot_be_fetched(
    external_app: FastAPI, jwks_server: JwksServer
) -> None:
    pem, public = _key_pair("ext-3")
    jwks_server.keys = [public]
    jwks_server.failing = True
    client_id = f"ext-{time.time_ns()}"
    await _register_external_client(external_app, client_id)
    try:
        response = await _get(external_app, _token(pem, "ext-3", client_id))
    finally:
        jwks_server.failing = False
    assert response.status_code == 401


async def test_an_external_token_for_a_client_registered_with_our_issuer_is_refused(
    external_app: FastAPI, jwks_server: JwksServer
) -> None:
    pem, public = _key_pair("ext-4")
    jwks_server.keys = [public]
    async with transaction(external_app.state.session_factory) as session:
        created = await create_client(
            session,
            name="School MIS",
            agency_type="school",
            agency_name="Northtown Primary",
            scopes=["audit:read"],
        )
    response = await _get(external_app, _token(pem, "ext-4", created.client.client_id))
    assert response.status_code == 401


def _without_typ(token: str, pem: str) -> str:
    """The same token signed again with a header that has no `typ` (python-jose always adds one),
    as some providers send it."""
    header_part, payload_part, _ = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_part + "=" * (-len(header_part) % 4)))
    del header["typ"]
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    signing_input = f"{encoded}.{payload_part}".encode()
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{encoded}.{payload_part}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "absent"])
async def test_an_external_access_token_need_not_be_an_at_jwt(
    external_app: FastAPI, jwks_server: JwksServer, typ: str
) -> None:
    # Entra ID's access tokens say `typ: JWT`; the at+jwt rule is for the built-in issuer.
    pem, public = _key_pair("ext-5")
    jwks_server.keys = [public]
    client_id = f"ext-{time.time_ns()}"
    await _register_external_client(external_app, client_id)
    token = _token(pem, "ext-5", client_id, typ="JWT" if typ == "absent" else typ)
    if typ == "absent":
        token = _without_typ(token, pem)
        assert "typ" not in jwt.get_unverified_header(token)
    response = await _get(external_app, token)
    assert response.status_code == 200, response.text


async def test_an_external_token_with_a_crit_header_is_refused(
    external_app: FastAPI, jwks_server: JwksServer
) -> None:
    pem, public = _key_pair("ext-6")
    jwks_server.keys = [public]
    client_id = f"ext-{time.time_ns()}"
    await _register_external_client(external_app, client_id)
    response = await _get(external_app, _token(pem, "ext-6", client_id, crit=["exp"]))
    assert response.status_code == 401
