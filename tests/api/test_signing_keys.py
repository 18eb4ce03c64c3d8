"""The built-in issuer's signing keys seen from outside: the service does not start without its
key-encryption key outside development, and after `keys rotate` the new key signs while tokens
of the old one keep verifying, on every replica, until they expire."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from jose import jwt
from pydantic import SecretStr

from api.main import create_app
from service.auth.key_encryption import (
    KeyEncryptionKey,
    KeyEncryptionKeyMissing,
    SigningKeyUnreadable,
    decrypt_private_key,
)
from service.auth.keys import (
    KeyRing,
    issue_access_token,
    new_signing_key,
    retired_key_window_s,
    rotate_signing_key,
)
from service.db import SessionFactory, transaction
from service.models import SigningKey
from service.settings import Settings
from tests.conftest import (
    TEST_AUDIENCE,
    TEST_ISSUER,
    TEST_KEY_ENCRYPTION_KEY,
    ClientMaker,
    RegisteredClient,
    assert_errors_are_problems,
)

KEK = KeyEncryptionKey(base64.b64decode(TEST_KEY_ENCRYPTION_KEY))


@pytest.fixture
def replica_settings(settings: Settings) -> Settings:
    # Reloads its keys every second, so a test sees it notice a rotation without a long wait.
    return settings.model_copy(update={"signing_key_reload_interval_s": 1.0})


@pytest.fixture
async def replica(replica_settings: Settings, runtime_database_url: str) -> AsyncIterator[FastAPI]:
    """A second process of the service on the same database, as another replica would be."""
    application = create_app(replica_settings, runtime_database_url)
    async with application.router.lifespan_context(application):
        yield application


def _http(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://test",
        event_hooks={"response": [assert_errors_are_problems]},
    )


async def _token(http: httpx.AsyncClient, registered: RegisteredClient) -> str:
    response = await http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(registered.client_id, registered.secret or ""),
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def _status(http: httpx.AsyncClient, token: str) -> int:
    response = await http.get("/v1/audit-events", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


def _kid(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


async def _jwks_kids(http: httpx.AsyncClient) -> set[str]:
    return {key["kid"] for key in (await http.get("/.well-known/jwks.json")).json()["keys"]}


# --- Starting ------------------------------------------------------------------------------------


async def test_the_service_refuses_to_start_on_a_real_database_without_a_kek(
    runtime_database_url: str, monkeypatch: pytest.MonkeyPatch, no_secrets_in_logs: list[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", runtime_database_url)
    for name in ("NEGLECT_ENV", "NEGLECT_KEY_ENCRYPTION_KEY", "NEGLECT_KEY_ENCRYPTION_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    application = create_app(settings, runtime_database_url)
    with pytest.raises(KeyEncryptionKeyMissing) as caught:
        async with application.router.lifespan_context(application):
            pass
    assert settings.env == "production"
    assert str(caught.value).startswith(
        "no key-encryption key: set NEGLECT_KEY_ENCRYPTION_KEY to 32 random bytes in base64"
    )
    assert any("cannot start: no key-encryption key" in line for line in no_secrets_in_logs)
    assert not hasattr(application.state, "engine")


async def test_a_kek_that_cannot_decrypt_the_signing_key_stops_the_start(
    app: FastAPI, settings: Settings, runtime_database_url: str
) -> None:
    other = base64.b64encode(os.urandom(32)).decode()
    application = create_app(
        settings.model_copy(update={"key_encryption_key": SecretStr(other)}), runtime_database_url
    )
    with pytest.raises(SigningKeyUnreadable, match="was encrypted with key-encryption key"):
        async with application.router.lifespan_context(application):
            pass


# --- Rotation ------------------------------------------------------------------------------------


async def test_after_a_rotation_the_new_key_signs_and_old_tokens_still_verify(
    app: FastAPI,
    replica: FastAPI,
    replica_settings: Settings,
    session_factory: SessionFactory,
    make_client: ClientMaker,
) -> None:
    registered = await make_client(["audit:read"])
    async with _http(replica) as on_replica, _http(app) as on_app:
        old_token = await _token(on_replica, registered)
        window_s = retired_key_window_s(replica_settings)
        async with transaction(session_factory) as session:
            rotation = await rotate_signing_key(session, KEK, window_s)
        assert rotation.retired_kids == [_kid(old_token)]
        # The replica reloads its keys within its interval (1 s here, 60 s by default).
        await asyncio.sleep(1.2)

        new_token = await _token(on_replica, registered)
        jwks_kids = await _jwks_kids(on_replica)
        old_status = await _status(on_replica, old_token)
        # `app` has not reloaded yet: a token naming a key it does not know makes it look.
        new_status_elsewhere = await _status(on_app, new_token)

    assert _kid(new_token) == rotation.new_kid
    assert {rotation.new_kid, _kid(old_token)} <= jwks_kids
    assert old_status == 200
    assert new_status_elsewhere == 200


async def test_a_key_retired_longer_than_a_token_lives_leaves_the_jwks(
    replica_settings: Settings,
    runtime_database_url: str,
    session_factory: SessionFactory,
    make_client: ClientMaker,
) -> None:
    registered = await make_client(["audit:read"])
    window = timedelta(seconds=retired_key_window_s(replica_settings))
    gone, kept = new_signing_key(KEK), new_signing_key(KEK)
    gone.retired_at = datetime.now(UTC) - window - timedelta(minutes=1)
    kept.retired_at = datetime.now(UTC) - window + timedelta(minutes=1)
    async with transaction(session_factory) as session:
        session.add_all([gone, kept])

    def signed_by(key_kid: str, encrypted: bytes) -> str:
        private_pem = decrypt_private_key(KEK, key_kid, KEK.kek_id, encrypted).decode()
        return issue_access_token(
            KeyRing(active_kid=key_kid, active_private_pem=private_pem, public_jwks={}),
            issuer=TEST_ISSUER,
            audience=TEST_AUDIENCE,
            client_id=registered.client_id,
            scopes=["audit:read"],
            ttl_s=300,
        )

    # A replica started now: it loads every key still published.
    application = create_app(replica_settings, runtime_database_url)
    async with application.router.lifespan_context(application), _http(application) as http:
        jwks_kids = await _jwks_kids(http)
        gone_status = await _status(http, signed_by(gone.kid, gone.encrypted_private_key))
        kept_status = await _status(http, signed_by(kept.kid, kept.encrypted_private_key))

    assert kept.kid in jwks_kids
    assert gone.kid not in jwks_kids
    assert gone_status == 401
    assert kept_status == 200


async def test_a_replica_without_the_new_kek_keeps_signing_and_accepts_the_new_keys_tokens(
    replica: FastAPI,
    replica_settings: Settings,
    session_factory: SessionFactory,
    make_client: ClientMaker,
) -> None:
    registered = await make_client(["audit:read"])
    new_kek = KeyEncryptionKey(os.urandom(32))
    window_s = retired_key_window_s(replica_settings)
    async with _http(replica) as on_replica:
        old_kid = _kid(await _token(on_replica, registered))
        try:
            # The KEK is being replaced: the key is rotated under the new KEK first.
            async with transaction(session_factory) as session:
                rotation = await rotate_signing_key(session, new_kek, window_s)
            async with transaction(session_factory) as session:
                new_key = await session.get(SigningKey, rotation.new_kid)
            assert new_key is not None
            new_pem = decrypt_private_key(
                new_kek, new_key.kid, new_key.kek_id, new_key.encrypted_private_key
            ).decode()
            await asyncio.sleep(1.2)  # the replica reloads and cannot decrypt the new key

            still_signing = _kid(await _token(on_replica, registered))
            new_key_token = issue_access_token(
                KeyRing(active_kid=new_key.kid, active_private_pem=new_pem, public_jwks={}),
                issuer=TEST_ISSUER,
                audience=TEST_AUDIENCE,
                client_id=registered.client_id,
                scopes=["audit:read"],
                ttl_s=300,
            )
            new_key_status = await _status(on_replica, new_key_token)
        finally:
            # Later tests start services with the test KEK: it must decrypt the signing key.
            async with transaction(session_factory) as session:
                await rotate_signing_key(session, KEK, window_s)

    assert still_signing == old_kid
    assert new_key_status == 200
