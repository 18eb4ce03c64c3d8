"""Tokens of several trusted issuers at once, each read by its own claim mapping (issue 11).

A real HTTP server on loopback plays three identity providers: an Entra ID tenant issuing v2
tokens, another issuing v1 tokens, and a Keycloak realm. Each serves its OpenID Provider
metadata and its JWKS at the paths the real provider uses, and the tokens are minted in the
shapes those providers document for a client-credentials (app-only) grant: Entra's `roles`,
`azp`/`appid` and `ver`, Keycloak's `azp`, `scope` and payload `typ: Bearer`. Only the host
differs (loopback over http, which the settings allow for loopback alone). The last section mints
users' delegated tokens in Entra's documented v1 and v2 shapes (`scp`, `oid`, `tid`,
`azp`/`appid`, `ver`), which Power BI's "Organizational account" sends to the feed (issue 13).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from jose import jwk, jwt
from sqlalchemy import text

from api.main import create_app
from service.auth import tokens
from service.auth.clients import create_client
from service.auth.issuers import discovery_url
from service.db import transaction
from service.settings import Settings, TrustedIssuer
from tests.api.test_feed_keys import PERSON_LEVEL
from tests.conftest import (
    TEST_AUDIENCE,
    TEST_ISSUER,
    TEST_KEY_ENCRYPTION_KEY,
    assert_errors_are_problems,
)

# Entra ID: the API's own app registration (the audience of v2 tokens) and its Application ID URI
# (the audience of v1 tokens requested for `api://neglect-service/.default`).
API_APPLICATION_ID = "6e3c0f7a-2d5b-4c1e-9a8f-1b2c3d4e5f60"
API_APPLICATION_ID_URI = "api://neglect-service"
TENANT_V2 = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
TENANT_V1 = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
REALM = "police"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SigningKey:
    """An RSA key pair with a self-signed certificate, published as its provider publishes it."""

    kid: str
    pem: str
    public: dict[str, Any]
    x5t: str
    x5c: str


def _signing_key(kid: str | None = None) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.example")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(private, hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    x5t = _b64url(hashlib.sha1(der).digest())  # noqa: S324 (x5t is SHA-1 by definition)
    public = jwk.construct(pem, "RS256").public_key().to_dict()
    return SigningKey(
        kid=kid or x5t,
        pem=pem,
        public={"n": public["n"], "e": public["e"]},
        x5t=x5t,
        x5c=base64.b64encode(der).decode(),
    )


@dataclass
class Provider:
    """One identity provider on the loopback server: its metadata and its JWKS."""

    issuer: str
    discovery_path: str
    jwks_path: str
    keys: list[SigningKey]
    jwks_shape: str
    discovery_failing: bool = False
    document_issuer: str | None = None

    def jwks(self) -> dict[str, Any]:
        if self.jwks_shape == "entra":
            # Entra's keys carry no `alg`; its v2 keys name their issuer.
            return {
                "keys": [
                    {
                        "kty": "RSA",
                        "use": "sig",
                        "kid": key.kid,
                        "x5t": key.x5t,
                        **key.public,
                        "x5c": [key.x5c],
                        **({"issuer": self.issuer} if self.issuer.endswith("/v2.0") else {}),
                    }
                    for key in self.keys
                ]
            }
        # Keycloak publishes its realm's encryption key beside the signing key.
        published = []
        for key in self.keys:
            published.append(
                {
                    "kid": key.kid,
                    "kty": "RSA",
                    "alg": "RSA-OAEP" if key.kid.startswith("enc-") else "RS256",
                    "use": "enc" if key.kid.startswith("enc-") else "sig",
                    **key.public,
                    "x5c": [key.x5c],
                    "x5t": key.x5t,
                }
            )
        return {"keys": published}

    def metadata(self, base: str) -> dict[str, Any]:
        return {
            "issuer": self.document_issuer or self.issuer,
            "token_endpoint": f"{self.issuer.rstrip('/')}/token",
            "jwks_uri": f"{base}{self.jwks_path}",
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }


@dataclass
class IdentityProviders:
    base: str = ""
    providers: dict[str, Provider] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)

    def serve(self, path: str) -> tuple[int, dict[str, Any] | None]:
        self.hits[path] += 1
        for provider in self.providers.values():
            if path == provider.discovery_path:
                if provider.discovery_failing:
                    return 503, None
                return 200, provider.metadata(self.base)
            if path == provider.jwks_path:
                return 200, provider.jwks()
        return 404, None


@pytest.fixture(scope="module")
def idps() -> Iterator[IdentityProviders]:
    state = IdentityProviders()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, document = state.serve(self.path)
            body = json.dumps(document).encode() if document is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def providers(idps: IdentityProviders) -> dict[str, Provider]:
    """Fresh keys and counters for each test, at the paths each provider really uses."""
    base = idps.base
    idps.hits.clear()
    idps.providers = {
        # https://login.microsoftonline.com/{tenant}/v2.0 and its discovery/v2.0/keys
        "entra-v2": Provider(
            issuer=f"{base}/{TENANT_V2}/v2.0",
            discovery_path=f"/{TENANT_V2}/v2.0/.well-known/openid-configuration",
            jwks_path=f"/{TENANT_V2}/discovery/v2.0/keys",
            keys=[_signing_key()],
            jwks_shape="entra",
        ),
        # https://sts.windows.net/{tenant}/ (its document is served by the tenant's v1 endpoint,
        # `service.auth.issuers.discovery_url`; here, beside the issuer)
        "entra-v1": Provider(
            issuer=f"{base}/{TENANT_V1}/",
            discovery_path=f"/{TENANT_V1}/.well-known/openid-configuration",
            jwks_path=f"/{TENANT_V1}/discovery/keys",
            keys=[_signing_key()],
            jwks_shape="entra",
        ),
        # https://keycloak.example/realms/{realm} and its protocol/openid-connect/certs
        "keycloak": Provider(
            issuer=f"{base}/realms/{REALM}",
            discovery_path=f"/realms/{REALM}/.well-known/openid-configuration",
            jwks_path=f"/realms/{REALM}/protocol/openid-connect/certs",
            keys=[_signing_key(f"kc-{uuid.uuid4()}"), _signing_key(f"enc-{uuid.uuid4()}")],
            jwks_shape="keycloak",
        ),
    }
    return idps.providers


def _settings(providers: dict[str, Provider], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "issuer": TEST_ISSUER,
        "audience": TEST_AUDIENCE,
        "key_encryption_key": TEST_KEY_ENCRYPTION_KEY,
        "trusted_issuers": [
            TrustedIssuer(
                issuer=providers["entra-v2"].issuer,
                preset="entra-id-v2",
                audiences=[API_APPLICATION_ID],
            ),
            TrustedIssuer(
                issuer=providers["entra-v1"].issuer,
                preset="entra-id-v1",
                audiences=[API_APPLICATION_ID_URI, API_APPLICATION_ID],
            ),
            # Keycloak's audience mapper adds the service's audience (NEGLECT_AUDIENCE).
            TrustedIssuer(issuer=providers["keycloak"].issuer, preset="keycloak"),
        ],
        **overrides,
    }
    return Settings(**values)


async def _started(settings: Settings, database_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(settings, database_url)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def app_with_issuers(
    providers: dict[str, Provider], database_url: str
) -> AsyncIterator[FastAPI]:
    async for application in _started(_settings(providers), database_url):
        yield application


async def _register(
    app: FastAPI, issuer: str, client_id: str, scopes: list[str], agency: str = "Northtown"
) -> None:
    async with transaction(app.state.session_factory) as session:
        await create_client(
            session,
            name=f"{agency} case system",
            agency_type="local_authority",
            agency_name=f"{agency} Council",
            scopes=scopes,
            issuer=issuer,
            client_id=client_id,
        )


def _entra_v2_claims(provider: Provider, app_id: str, roles: list[str]) -> dict[str, Any]:
    """An Entra ID v2.0 app-only access token's payload, as Microsoft documents it."""
    now = int(time.time())
    service_principal = str(uuid.uuid4())
    return {
        "aud": API_APPLICATION_ID,
        "iss": provider.issuer,
        "iat": now,
        "nbf": now,
        "exp": now + 3599,
        "aio": "k2BgYDD6x3jLSW9uSapm1it3vtdnAA==",
        "azp": app_id,
        "azpacr": "1",
        "oid": service_principal,
        "rh": "0.AXQAm0m7b8i7qEqBXaX6z0Va9AIAAAAAAAAAwAAAAAAAAAB0AAA.",
        "roles": roles,
        "sub": service_principal,
        "tid": TENANT_V2,
        "uti": "Zk0S4v9dNUS7mRDNOe0AAA",
        "ver": "2.0",
    }


def _entra_v1_claims(provider: Provider, app_id: str, roles: list[str]) -> dict[str, Any]:
    """An Entra ID v1.0 app-only access token's payload."""
    now = int(time.time())
    service_principal = str(uuid.uuid4())
    return {
        "aud": API_APPLICATION_ID_URI,
        "iss": provider.issuer,
        "iat": now,
        "nbf": now,
        "exp": now + 3599,
        "aio": "E2ZgYJi+6rf/o9i5ylZnFy2n1uGBAA==",
        "appid": app_id,
        "appidacr": "1",
        "idp": provider.issuer,
        "oid": service_principal,
        "rh": "0.AXQAm0m7b8i7qEqBXaX6z0Va9AIAAAAAAAAAwAAAAAAAAAB0AAA.",
        "roles": roles,
        "sub": service_principal,
        "tid": TENANT_V1,
        "uti": "x8Xb1W0f4k2lKnMjq0kAAA",
        "ver": "1.0",
    }


def _keycloak_claims(provider: Provider, client_id: str, scope: str) -> dict[str, Any]:
    """A Keycloak service-account (client credentials) access token's payload."""
    now = int(time.time())
    return {
        "exp": now + 300,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "iss": provider.issuer,
        "aud": [TEST_AUDIENCE, "account"],
        "sub": str(uuid.uuid4()),
        "typ": "Bearer",
        "azp": client_id,
        "acr": "1",
        "allowed-origins": ["/*"],
        "realm_access": {"roles": ["default-roles-police", "offline_access", "uma_authorization"]},
        "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
        "scope": scope,
        "clientHost": "10.20.0.7",
        "email_verified": False,
        "preferred_username": f"service-account-{client_id}",
        "clientAddress": "10.20.0.7",
        "client_id": client_id,
    }


def _entra_sign(provider: Provider, claims: dict[str, Any], key: SigningKey | None = None) -> str:
    key = key or provider.keys[0]
    # python-jose writes `typ: JWT`, as Entra does.
    token: str = jwt.encode(
        claims, key.pem, algorithm="RS256", headers={"kid": key.kid, "x5t": key.x5t}
    )
    return token


def _keycloak_sign(
    provider: Provider, claims: dict[str, Any], key: SigningKey | None = None
) -> str:
    key = key or provider.keys[0]
    token: str = jwt.encode(claims, key.pem, algorithm="RS256", headers={"kid": key.kid})
    return token


async def _get(app: FastAPI, path: str, token: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://test",
        event_hooks={"response": [assert_errors_are_problems]},
    ) as http:
        return await http.get(path, headers={"Authorization": f"Bearer {token}"})


# --- Each preset, in its provider's shape ---------------------------------------------------


async def test_an_entra_id_v2_app_only_token_is_granted_the_roles_its_registration_allows(
    app_with_issuers: FastAPI, providers: dict[str, Provider]
) -> None:
    entra = providers["entra-v2"]
    app_id = str(uuid.uuid4())
    await _register(app_with_issuers, entra.issuer, app_id, ["audit:read", "referrals:read"])
    # `admin` is an app role the tenant granted, but not one this registration allows.
    token = _entra_sign(entra, _entra_v2_claims(entra, app_id, ["audit:read", "admin"]))

    assert (await _get(app_with_issuers, "/v1/audit-events", token)).status_code == 200
    refused_admin = await _get(app_with_issuers, "/v1/clients", token)
    assert refused_admin.status_code == 403
    # Allowed by the registration, but not granted in the tenant: not held either.
    assert (await _get(app_with_issuers, "/v1/referrals", token)).status_code == 403


async def test_an_entra_id_v1_app_only_token_is_accepted_with_its_roles(
    app_with_issuers: FastAPI, providers: dict[str, Provider]
) -> None:
    entra = providers["entra-v1"]
    app_id = str(uuid.uuid4())
    await _register(app_with_issuers, entra.issuer, app_id, ["audit:read"])
    token = _entra_sign(entra, _entra_v1_claims(entra, app_id, ["audit:read"]))

    response = await _get(app_with_issuers, "/v1/audit-events", token)

    assert response.status_code == 200, response.text


async def test_a_keycloak_service_account_token_is_granted_its_scopes_within_the_registration(
    app_with_issuers: FastAPI, providers: dict[str, Provider]
) -> None:
    keycloak = providers["keycloak"]
    client_id = f"police-case-system-{uuid.uuid4().hex[:8]}"
    await _register(app_with_issuers, keycloak.issuer, client_id, ["audit:read"], "Police")
    claims = _keycloak_claims(keycloak, client_id, "profile email audit:read admin")
    token = _keycloak_sign(keycloak, claims)

    assert (await _get(app_with_issuers, "/v1/audit-events", token)).status_code == 200
    assert (await _get(app_with_issuers, "/v1/clients", token)).status_code == 403


async def test_tokens_of_two_issuers_are_accepted_side_by_side_each_for_its_own_client(
    app_with_issuers: FastAPI, providers: dict[str, Provider]
) -> None:
    entra, keycloak = providers["entra-v2"], providers["keycloak"]
    council_app = str(uuid.uuid4())
    police_client = f"police-{uuid.uuid4().hex[:8]}"
    await _register(app_with_issuers, entra.issuer, council_app, ["audit:read"])
    await _register(app_with_issuers, keycloak.issuer, police_client, ["audit:read"], "Police")
    council = _entra_sign(entra, _entra_v2_claims(entra, council_app, ["audit:read"]))
    police = _keycloak_sign(keycloak, _keycloak_claims(keycloak, police_client, "audit:read"))
    # Keycloak naming the council's app: that client is registered with the tenant, not the realm.
    impostor = _keycloak_sign(keycloak, _keycloak_claims(keycloak, council_app, "audit:read"))

    assert (await _get(app_with_issuers, "/v1/audit-events", council)).status_code == 200
    assert (await _get(app_with_issuers, "/v1/audit-events", police)).status_code == 200
    assert (await _get(app_with_issuers, "/v1/audit-events", impostor)).status_code == 401


# --- Wrong shapes, wrong issuers, wrong audiences -------------------------------------------


async def test_a_token_from_an_issuer_not_configured_is_refused(
    app_with_issuers: FastAPI, providers: dict[str, Provider], idps: IdentityProviders
) -> None:
    entra = providers["entra-v2"]
    app_id = str(uuid.uuid4())
    await _register(app_with_issuers, entra.issuer, app_id, ["audit:read"])
    claims = _entra_v2_claims(entra, app_id, ["audit:read"])
    # Another tenant of the same cloud, signed with a key the trusted tenant publishes.
    claims["iss"] = f"{idps.base}/{uuid.uuid4()}/v2.0"

    response = await _get(app_with_issuers, "/v1/audit-events", _entra_sign(entra, claims))

    assert response.status_code == 401
    assert "issuer is not trusted" in response.json()["detail"]


@pytest.mark.parametrize(
    "audience", [TEST_AUDIENCE, "00000003-0000-0000-c000-000000000000", API_APPLICATION_ID_URI]
)
async def test_an_entra_v2_token_for_another_audience_is_refused(
    app_with_issuers: FastAPI, providers: dict[str, Provider], audience: str
) -> None:
    # Configured for the API's application id only: NEGLECT_AUDIENCE, Microsoft Graph's id and
    # the v1 audience are all someone else's tokens here.
    entra = providers["entra-v2"]
    app_id = str(uuid.uuid4())
    await _register(app_with_issuers, entra.issuer, app_id, ["audit:read"])
    claims = {**_entra_v2_claims(entra, app_id, ["audit:read"]), "aud": audience}

    response = await _get(app_with_issuers, "/v1/audit-events", _entra_sign(entra, claims))

    assert response.status_code == 401
    assert "aud" in response.json()["detail"]


async def test_a_keycloak_token_without_the_service_audience_is_refused(
    app_with_issuers: FastAPI, providers: dict[str, Provider]
) -> None:
    # Keycloak's default access token is for `account` only, until an audience mapper adds ours.
    keycloak = providers["keycloak"]
    client_id = f"police-{uuid.uuid4().hex[:8]}"
    await _register(app_with_issuers, keycloak.issuer, client_id, ["audit:read"], "Police")
    claims = {**_keycloak_claims(keycloak, client_id, "audit:read"), "aud": "account"}

    response = await _get(app_with_issuers, "/v1/audit-events", _keycloak_sign(keycloak, claims))

    assert response.status_code == 401


async def test_an_entra_users_delegated_token_is_refused(
    app_with_issuers: FastAPI, providers: dict[str, Provider]
) -> None:
    # A user signed in through the registered app: `scp` carries delegated permissions, and the
    # user's own app roles sit in `roles`. Only the app itself is a client here.
    entra = providers["entra-v2"]
    app_id = str(uuid.uuid4())
    await _register(app_with_issuers, entra.issuer, app_id, ["audit:read"])
    claims = {
        **_entra_v2_claims(entra, app_id, ["audit:read"]),
        "scp": "access_as_user",
        "name": "A. Caseworker",
        "preferred_username": "a.caseworker@northtown.example",
    }

    response = await _get(app_with_issuers, "/v1/audit-events", _entra_sign(entra, claims))

    assert response.status_code == 401
    assert "scp" in response.json()["detail"]


async def test_an_entra_token_names_its_client_in_azp_never_in_sub(
    app_with_issuers: FastAPI, providers: dict[str, Provider]
) -> None:
    # `sub` is the service principal's object id: a client registered under that id is not
    # the app the token names.
    entra = providers["entra-v2"]
    registered = str(uuid.uuid4())
    await _register(app_with_issuers, entra.issuer, registered, ["audit:read"])
    claims = {**_entra_v2_claims(entra, str(uuid.uuid4()), ["audit:read"]), "sub": registered}

    response = await _get(app_with_issuers, "/v1/audit-events", _entra_sign(entra, claims))

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("provider_name", "change"),
    [
        # A v1 token at the v2 issuer's name: `ver` is 1.0 and the app is in `appid`.
        ("entra-v2", {"ver": "1.0"}),
        ("entra-v2", {"azp": None}),
        ("entra-v1", {"ver": "2.0"}),
        ("entra-v1", {"appid": None}),
        # Roles as one string: Entra always sends a list, but either is read; a number is not.
        ("entra-v2", {"roles": 7}),
    ],
)
async def test_an_entra_token_of_the_wrong_shape_is_refused(
    app_with_issuers: FastAPI,
    providers: dict[str, Provider],
    provider_name: str,
    change: dict[str, Any],
) -> None:
    entra = providers[provider_name]
    app_id = str(uuid.uuid4())
    await _register(app_with_issuers, entra.issuer, app_id, ["audit:read"])
    shape = _entra_v2_claims if provider_name == "entra-v2" else _entra_v1_claims
    claims = {**shape(entra, app_id, ["audit:read"]), **change}
    claims = {name: value for name, value in claims.items() if value is not None}

    response = await _get(app_with_issuers, "/v1/audit-events", _entra_sign(entra, claims))

    assert response.status_code == 401


@pytest.mark.parametrize("payload_typ", ["ID", "Refresh", None])
async def test_a_keycloak_token_that_is_not_an_access_token_is_refused(
    app_with_issuers: FastAPI, providers: dict[str, Provider], payload_typ: str | None
) -> None:
    # An ID token or a refresh token of the same client, signed by the same realm key.
    keycloak = providers["keycloak"]
    client_id = f"police-{uuid.uuid4().hex[:8]}"
    await _register(app_with_issuers, keycloak.issuer, client_id, ["audit:read"], "Police")
    claims = {**_keycloak_claims(keycloak, client_id, "audit:read"), "typ": payload_typ}
    claims = {name: value for name, value in claims.items() if value is not None}

    response = await _get(app_with_issuers, "/v1/audit-events", _keycloak_sign(keycloak, claims))

    assert response.status_code == 401
    assert "typ" in response.json()["detail"]


async def test_a_token_signed_with_keycloaks_encryption_key_is_refused(
    app_with_issuers: FastAPI, providers: dict[str, Provider]
) -> None:
    keycloak = providers["keycloak"]
    client_id = f"police-{uuid.uuid4().hex[:8]}"
    await _register(app_with_issuers, keycloak.issuer, client_id, ["audit:read"], "Police")
    claims = _keycloak_claims(keycloak, client_id, "audit:read")
    encryption_key = keycloak.keys[1]

    response = await _get(
        app_with_issuers, "/v1/audit-events", _keycloak_sign(keycloak, claims, encryption_key)
    )

    assert response.status_code == 401
    assert "signing key" in response.json()["detail"]


async def test_an_entra_token_typed_as_another_kind_of_jwt_is_refused(
    app_with_issuers: FastAPI, providers: dict[str, Provider]
) -> None:
    entra = providers["entra-v2"]
    app_id = str(uuid.uuid4())
    await _register(app_with_issuers, entra.issuer, app_id, ["audit:read"])
    key = entra.keys[0]
    token = jwt.encode(
        _entra_v2_claims(entra, app_id, ["audit:read"]),
        key.pem,
        algorithm="RS256",
        headers={"kid": key.kid, "typ": "logout+jwt"},
    )

    response = await _get(app_with_issuers, "/v1/audit-events", token)

    assert response.status_code == 401


# --- Discovery and key caching --------------------------------------------------------------


class _FrozenClock:
    """`time` for the verifier with a monotonic clock that moves only when told, so the refetch
    interval is tested exactly however slow the machine is; wall time stays real."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()


async def test_discovery_and_jwks_are_fetched_once_and_refetched_for_a_new_kid_after_the_interval(
    providers: dict[str, Provider],
    idps: IdentityProviders,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _FrozenClock()
    monkeypatch.setattr(tokens, "time", clock)
    entra = providers["entra-v2"]
    settings = _settings(providers, jwks_refetch_interval_s=1.0)
    async for app in _started(settings, database_url):
        app_id = str(uuid.uuid4())
        await _register(app, entra.issuer, app_id, ["audit:read"])
        for _ in range(3):
            token = _entra_sign(entra, _entra_v2_claims(entra, app_id, ["audit:read"]))
            assert (await _get(app, "/v1/audit-events", token)).status_code == 200
        assert idps.hits[entra.discovery_path] == 1
        assert idps.hits[entra.jwks_path] == 1

        # The tenant rolls its keys over: a token of the new key right away finds the JWKS
        # fetched too recently, and is refused without another fetch.
        rolled = _signing_key()
        entra.keys = [entra.keys[0], rolled]
        claims = _entra_v2_claims(entra, app_id, ["audit:read"])
        assert (
            await _get(app, "/v1/audit-events", _entra_sign(entra, claims, rolled))
        ).status_code == 401
        assert idps.hits[entra.jwks_path] == 1

        clock.now += 1.05
        claims = _entra_v2_claims(entra, app_id, ["audit:read"])
        response = await _get(app, "/v1/audit-events", _entra_sign(entra, claims, rolled))
        assert response.status_code == 200, response.text
        assert idps.hits[entra.jwks_path] == 2
        # The JWKS URL discovered first is still good: the document is not fetched again.
        assert idps.hits[entra.discovery_path] == 1


async def test_an_issuer_whose_discovery_fails_is_refused_until_it_answers(
    providers: dict[str, Provider], idps: IdentityProviders, database_url: str
) -> None:
    keycloak = providers["keycloak"]
    keycloak.discovery_failing = True
    settings = _settings(providers, jwks_refetch_interval_s=1.0)
    async for app in _started(settings, database_url):
        client_id = f"police-{uuid.uuid4().hex[:8]}"
        await _register(app, keycloak.issuer, client_id, ["audit:read"], "Police")
        token = _keycloak_sign(keycloak, _keycloak_claims(keycloak, client_id, "audit:read"))

        assert (await _get(app, "/v1/audit-events", token)).status_code == 401
        assert idps.hits[keycloak.jwks_path] == 0

        keycloak.discovery_failing = False
        await asyncio.sleep(1.05)
        assert (await _get(app, "/v1/audit-events", token)).status_code == 200
        assert idps.hits[keycloak.discovery_path] == 2


async def test_a_discovery_document_naming_another_issuer_is_not_trusted(
    app_with_issuers: FastAPI, providers: dict[str, Provider], idps: IdentityProviders
) -> None:
    entra = providers["entra-v2"]
    entra.document_issuer = f"{idps.base}/{uuid.uuid4()}/v2.0"
    app_id = str(uuid.uuid4())
    await _register(app_with_issuers, entra.issuer, app_id, ["audit:read"])
    token = _entra_sign(entra, _entra_v2_claims(entra, app_id, ["audit:read"]))

    response = await _get(app_with_issuers, "/v1/audit-events", token)

    assert response.status_code == 401
    assert idps.hits[entra.jwks_path] == 0


async def test_an_explicit_jwks_url_is_used_without_discovery(
    providers: dict[str, Provider], idps: IdentityProviders, database_url: str
) -> None:
    keycloak = providers["keycloak"]
    settings = _settings(
        providers,
        trusted_issuers=[
            TrustedIssuer(
                issuer=keycloak.issuer,
                preset="keycloak",
                jwks_url=f"{idps.base}{keycloak.jwks_path}",
            )
        ],
    )
    async for app in _started(settings, database_url):
        client_id = f"police-{uuid.uuid4().hex[:8]}"
        await _register(app, keycloak.issuer, client_id, ["audit:read"], "Police")
        token = _keycloak_sign(keycloak, _keycloak_claims(keycloak, client_id, "audit:read"))

        assert (await _get(app, "/v1/audit-events", token)).status_code == 200
        assert idps.hits[keycloak.discovery_path] == 0


async def test_a_claim_mapping_can_be_set_per_issuer_without_a_preset(
    providers: dict[str, Provider], database_url: str
) -> None:
    # A provider with no preset that names its client in `azp` and its permissions in `roles`.
    entra = providers["entra-v2"]
    settings = _settings(
        providers,
        trusted_issuers=[
            TrustedIssuer(
                issuer=entra.issuer,
                audiences=[API_APPLICATION_ID],
                client_claims=["azp"],
                scope_claims=["roles"],
                typ=["JWT"],
            )
        ],
    )
    async for app in _started(settings, database_url):
        app_id = str(uuid.uuid4())
        await _register(app, entra.issuer, app_id, ["audit:read"])
        token = _entra_sign(entra, _entra_v2_claims(entra, app_id, ["audit:read"]))

        assert (await _get(app, "/v1/audit-events", token)).status_code == 200


def test_the_entra_v1_issuer_is_discovered_at_the_tenants_v1_endpoint() -> None:
    tenant = TENANT_V1
    assert discovery_url(f"https://sts.windows.net/{tenant}/", "entra-id-v1") == (
        f"https://login.microsoftonline.com/{tenant}/.well-known/openid-configuration"
    )
    assert discovery_url(f"https://login.microsoftonline.com/{tenant}/v2.0", "entra-id-v2") == (
        f"https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
    )
    assert discovery_url("https://sso.police.example/realms/force", "keycloak") == (
        "https://sso.police.example/realms/force/.well-known/openid-configuration"
    )


# --- Users' delegated tokens on the feed (Power BI's "Organizational account") ---------------
#
# Power BI signs its user in to the tenant and sends a delegated token issued to its own app
# (Power Query for Excel in Desktop and the gateway, Power BI Data Refresh in the service), for
# the feed's audience, with the `user_impersonation` scope it asks for. Here the v2 tenant's API
# registration also serves the feed (one application id, so one audience for both kinds of
# token); the v1 tenant's feed is a registration of its own whose Application ID URI is the
# feed's base URL, as Power BI requires. Each test registers the BI app under a fresh id: client
# ids are unique in the registry (the real ids are in the README).

FEED_APPLICATION_ID_URI = "https://neglect.northtown.example"
FEED_PATHS = [
    "/odata/",
    "/odata/$metadata",
    "/odata/Indicators",
    "/odata/IndicatorPoints?from=2024-01-01&to=2024-02-29&$top=2",
    "/v1/indicators",
    "/v1/indicators/toolkit_assessments?from=2024-01-01&to=2024-02-29&period=month",
]


def _feed_settings(providers: dict[str, Provider], **overrides: Any) -> Settings:
    return _settings(
        providers,
        trusted_issuers=[
            TrustedIssuer(
                issuer=providers["entra-v2"].issuer,
                preset="entra-id-v2",
                audiences=[API_APPLICATION_ID],
                feed_audiences=[API_APPLICATION_ID],
            ),
            TrustedIssuer(
                issuer=providers["entra-v1"].issuer,
                preset="entra-id-v1",
                audiences=[API_APPLICATION_ID_URI],
                feed_audiences=[FEED_APPLICATION_ID_URI],
            ),
            TrustedIssuer(issuer=providers["keycloak"].issuer, preset="keycloak"),
        ],
        **overrides,
    )


@pytest.fixture
async def app_with_feed(
    providers: dict[str, Provider], database_url: str
) -> AsyncIterator[FastAPI]:
    async for application in _started(_feed_settings(providers), database_url):
        yield application


def _entra_v2_delegated_claims(
    provider: Provider, app_id: str, user: str, scp: str = "user_impersonation"
) -> dict[str, Any]:
    """An Entra ID v2.0 access token issued to `app_id` for a signed-in user, as Microsoft
    documents it: `scp` holds the delegated scopes, `oid` the user, `sub` a pairwise id."""
    now = int(time.time())
    return {
        "aud": API_APPLICATION_ID,
        "iss": provider.issuer,
        "iat": now,
        "nbf": now,
        "exp": now + 4299,
        "aio": "AWQAm/8ZAAAAxN0yH1Vd8L4x3ELbTUYXb0P2+Vf5d1G3QJ9m",
        "azp": app_id,
        "azpacr": "0",
        "name": "Alex Analyst",
        "oid": user,
        "preferred_username": "alex.analyst@northtown.example",
        "rh": "0.AXQAm0m7b8i7qEqBXaX6z0Va9AIAAAAAAAAAwAAAAAAAAAB0AGE.",
        "roles": ["indicators:read:unsuppressed"],
        "scp": scp,
        "sid": str(uuid.uuid4()),
        "sub": "Jq1mB2n4zT9Xk0c5QyW8r3uVhL7pE6sDfGaHbJiKoMn",
        "tid": TENANT_V2,
        "uti": "bK3sQ7dYp0yR4wZxN2aAAA",
        "ver": "2.0",
    }


def _entra_v1_delegated_claims(
    provider: Provider, app_id: str, user: str, scp: str = "user_impersonation"
) -> dict[str, Any]:
    """An Entra ID v1.0 access token issued to `app_id` for a signed-in user: the client in
    `appid`, the user in `oid`, `upn` and `unique_name`."""
    now = int(time.time())
    return {
        "aud": FEED_APPLICATION_ID_URI,
        "iss": provider.issuer,
        "iat": now,
        "nbf": now,
        "exp": now + 4560,
        "acr": "1",
        "aio": "ATQAy/8ZAAAAm5x2kT1oHq0Z4eP7rVwXc9Lb3Nf6JdG8sYtK",
        "amr": ["pwd", "mfa"],
        "appid": app_id,
        "appidacr": "0",
        "family_name": "Analyst",
        "given_name": "Alex",
        "ipaddr": "203.0.113.7",
        "name": "Alex Analyst",
        "oid": user,
        "rh": "0.AXQAm0m7b8i7qEqBXaX6z0Va9AIAAAAAAAAAwAAAAAAAAAB0AGE.",
        "scp": scp,
        "sub": "p8Vt3Yc2Lk9Qx1Rz7Mw4Nb6Hd0Gf5Js2KaEuWiOyTlX",
        "tid": TENANT_V1,
        "unique_name": "alex.analyst@northtown.example",
        "upn": "alex.analyst@northtown.example",
        "uti": "Wq2xE5rT8yU1iO4pA7sDAA",
        "ver": "1.0",
    }


async def _audit_events_of_user(app: FastAPI, user: str) -> list[tuple[Any, ...]]:
    async with transaction(app.state.session_factory) as session:
        rows = await session.execute(
            text(
                "SELECT client_id, agency_name, action, resource_type FROM audit_event "
                "WHERE resource_id = :user ORDER BY id"
            ),
            {"user": user},
        )
        return [tuple(row) for row in rows]


async def _exports_by(app: FastAPI, client_id: str) -> int:
    async with transaction(app.state.session_factory) as session:
        count = await session.scalar(
            text(
                "SELECT count(*) FROM audit_event WHERE client_id = :client AND action = 'export'"
            ),
            {"client": client_id},
        )
        return int(count or 0)


async def test_a_power_bi_users_v2_delegated_token_opens_the_feed_and_the_indicators(
    app_with_feed: FastAPI, providers: dict[str, Provider]
) -> None:
    entra = providers["entra-v2"]
    power_bi = str(uuid.uuid4())
    await _register(app_with_feed, entra.issuer, power_bi, ["indicators:read"])
    token = _entra_sign(entra, _entra_v2_delegated_claims(entra, power_bi, str(uuid.uuid4())))

    answers = {path: (await _get(app_with_feed, path, token)).status_code for path in FEED_PATHS}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_with_feed), base_url="http://test"
    ) as http:
        as_csv = await http.get(
            FEED_PATHS[-1], headers={"Authorization": f"Bearer {token}", "Accept": "text/csv"}
        )

    assert answers == dict.fromkeys(FEED_PATHS, 200)
    assert as_csv.status_code == 200
    assert as_csv.text.startswith("time_period,time_identifier,")


async def test_a_v1_delegated_token_for_the_feeds_application_id_uri_opens_the_feed(
    app_with_feed: FastAPI, providers: dict[str, Provider]
) -> None:
    entra = providers["entra-v1"]
    power_bi = str(uuid.uuid4())
    await _register(app_with_feed, entra.issuer, power_bi, ["indicators:read"])
    token = _entra_sign(entra, _entra_v1_delegated_claims(entra, power_bi, str(uuid.uuid4())))

    answers = {path: (await _get(app_with_feed, path, token)).status_code for path in FEED_PATHS}

    assert answers == dict.fromkeys(FEED_PATHS, 200)


async def test_every_use_of_a_delegated_token_is_audited_with_its_client_agency_and_user(
    app_with_feed: FastAPI, providers: dict[str, Provider]
) -> None:
    entra = providers["entra-v2"]
    power_bi, user = str(uuid.uuid4()), str(uuid.uuid4())
    await _register(app_with_feed, entra.issuer, power_bi, ["indicators:read"], "Southvale")
    token = _entra_sign(entra, _entra_v2_delegated_claims(entra, power_bi, user))

    ok = await _get(app_with_feed, "/odata/Indicators", token)
    bad = await _get(app_with_feed, "/odata/Indicators?$top=x", token)
    listed = await _get(app_with_feed, "/v1/indicators", token)

    assert (ok.status_code, bad.status_code, listed.status_code) == (200, 400, 200)
    assert (
        await _audit_events_of_user(app_with_feed, user)
        == [(power_bi, "Southvale Council", "read", "delegated_user")] * 3
    )


async def test_a_delegated_token_opens_no_person_level_route_whatever_its_registration_allows(
    app_with_feed: FastAPI, providers: dict[str, Provider]
) -> None:
    entra = providers["entra-v2"]
    power_bi = str(uuid.uuid4())
    everything = [
        "referrals:read",
        "referrals:read:all",
        "referrals:write",
        "referrals:decide",
        "assessments:read",
        "assessments:write",
        "case-events:write",
        "audits:read",
        "audits:write",
        "indicators:read",
        "audit:read",
        "admin",
    ]
    await _register(app_with_feed, entra.issuer, power_bi, everything)
    token = _entra_sign(entra, _entra_v2_delegated_claims(entra, power_bi, str(uuid.uuid4())))
    transport = httpx.ASGITransport(app=app_with_feed)

    statuses: dict[str, int] = {}
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://test",
        event_hooks={"response": [assert_errors_are_problems]},
    ) as http:
        for method, path in PERSON_LEVEL:
            url = re.sub(r"{[^}]+}", lambda _: str(uuid.uuid4()), path)
            response = await http.request(method, url, headers={"Authorization": f"Bearer {token}"})
            statuses[f"{method} {path}"] = response.status_code
            if response.status_code == 401:
                assert "delegated token" in response.json()["detail"], path

    assert statuses == dict.fromkeys(statuses, 401)
    assert len(statuses) > 20


@pytest.mark.parametrize(
    ("provider_name", "audience"),
    [
        # Microsoft Graph's, and another app's: someone else's tokens.
        ("entra-v2", "00000003-0000-0000-c000-000000000000"),
        ("entra-v2", str(uuid.UUID(int=7))),
        # The v1 tenant's API audience is for app-only tokens; its users' tokens are the feed's.
        ("entra-v1", API_APPLICATION_ID_URI),
        ("entra-v1", f"{FEED_APPLICATION_ID_URI}/odata"),
    ],
)
async def test_a_delegated_token_for_another_audience_is_refused(
    app_with_feed: FastAPI, providers: dict[str, Provider], provider_name: str, audience: str
) -> None:
    entra = providers[provider_name]
    power_bi = str(uuid.uuid4())
    await _register(app_with_feed, entra.issuer, power_bi, ["indicators:read"])
    build = (
        _entra_v2_delegated_claims if provider_name == "entra-v2" else _entra_v1_delegated_claims
    )
    claims = {**build(entra, power_bi, str(uuid.uuid4())), "aud": audience}

    response = await _get(app_with_feed, "/v1/indicators", _entra_sign(entra, claims))

    assert response.status_code == 401
    assert "aud" in response.json()["detail"]


async def test_a_delegated_token_from_an_issuer_not_trusted_is_refused(
    app_with_feed: FastAPI, providers: dict[str, Provider], idps: IdentityProviders
) -> None:
    entra = providers["entra-v2"]
    power_bi = str(uuid.uuid4())
    await _register(app_with_feed, entra.issuer, power_bi, ["indicators:read"])
    claims = _entra_v2_delegated_claims(entra, power_bi, str(uuid.uuid4()))
    # A user of another tenant, signed with a key the trusted tenant publishes.
    claims["iss"] = f"{idps.base}/{uuid.uuid4()}/v2.0"

    response = await _get(app_with_feed, "/odata/", _entra_sign(entra, claims))

    assert response.status_code == 401


async def test_a_delegated_token_of_another_trusted_tenant_is_not_for_this_tenants_registration(
    app_with_feed: FastAPI, providers: dict[str, Provider]
) -> None:
    # Power BI is registered for the v2 tenant's users; a user of the v1 tenant, signed in
    # through the same app, is not them.
    entra_v2, entra_v1 = providers["entra-v2"], providers["entra-v1"]
    power_bi = str(uuid.uuid4())
    await _register(app_with_feed, entra_v2.issuer, power_bi, ["indicators:read"])
    claims = _entra_v1_delegated_claims(entra_v1, power_bi, str(uuid.uuid4()))

    response = await _get(app_with_feed, "/v1/indicators", _entra_sign(entra_v1, claims))

    assert response.status_code == 401
    assert "registered with this token's issuer" in response.json()["detail"]


@pytest.mark.parametrize(
    ("scp", "registered"),
    [
        # Consent to other delegated permissions, not to the feed's scope.
        ("User.Read openid profile", ["indicators:read"]),
        ("access_as_user", ["indicators:read"]),
        # The feed's scope, but a registration that may not read indicators.
        ("user_impersonation", ["audit:read"]),
    ],
)
async def test_a_delegated_token_outside_its_registration_is_refused(
    app_with_feed: FastAPI, providers: dict[str, Provider], scp: str, registered: list[str]
) -> None:
    entra = providers["entra-v2"]
    power_bi = str(uuid.uuid4())
    await _register(app_with_feed, entra.issuer, power_bi, registered)
    claims = _entra_v2_delegated_claims(entra, power_bi, str(uuid.uuid4()), scp=scp)
    token = _entra_sign(entra, claims)

    statuses = [(await _get(app_with_feed, path, token)).status_code for path in FEED_PATHS]

    assert statuses == [403] * len(FEED_PATHS)


async def test_a_delegated_token_never_reads_exact_figures_whatever_its_registration_allows(
    app_with_feed: FastAPI, providers: dict[str, Provider]
) -> None:
    # The registration may read exact figures and the user's token carries the scope's name (in
    # `scp` and as an app role): a user in Power BI still reads only what a feed key reads.
    entra = providers["entra-v2"]
    power_bi = str(uuid.uuid4())
    scopes = ["indicators:read", "indicators:read:unsuppressed"]
    await _register(app_with_feed, entra.issuer, power_bi, scopes)
    claims = _entra_v2_delegated_claims(
        entra, power_bi, str(uuid.uuid4()), scp="user_impersonation indicators:read:unsuppressed"
    )

    response = await _get(
        app_with_feed,
        "/v1/indicators/toolkit_assessments?from=2024-01-01&to=2024-02-29",
        _entra_sign(entra, claims),
    )

    assert response.status_code == 200
    assert response.json()["suppression_applied"] is True
    assert await _exports_by(app_with_feed, power_bi) == 0


@pytest.mark.parametrize(
    ("claim", "value"),
    [("oid", None), ("azp", None), ("oid", ""), ("oid", "x" * 100), ("scp", ["user", 7])],
)
async def test_a_delegated_token_of_the_wrong_shape_is_refused(
    app_with_feed: FastAPI, providers: dict[str, Provider], claim: str, value: Any
) -> None:
    # No user, no app, a user that is not an object id, or scopes that are not strings.
    entra = providers["entra-v2"]
    power_bi = str(uuid.uuid4())
    await _register(app_with_feed, entra.issuer, power_bi, ["indicators:read"])
    claims = _entra_v2_delegated_claims(entra, power_bi, str(uuid.uuid4()))
    if value is None:
        del claims[claim]
    else:
        claims[claim] = value

    response = await _get(app_with_feed, "/odata/", _entra_sign(entra, claims))

    assert response.status_code == 401


async def test_app_only_tokens_for_the_same_audience_keep_their_roles_beside_users_tokens(
    app_with_feed: FastAPI, providers: dict[str, Provider]
) -> None:
    # The v2 tenant's one application id is both audiences: an app's token (no `scp`) is read
    # by its roles and opens what its registration allows, the feed's delegated tokens do not.
    entra = providers["entra-v2"]
    case_system = str(uuid.uuid4())
    await _register(app_with_feed, entra.issuer, case_system, ["audit:read"])
    token = _entra_sign(entra, _entra_v2_claims(entra, case_system, ["audit:read"]))

    response = await _get(app_with_feed, "/v1/audit-events", token)

    assert response.status_code == 200
