"""The issuer's signing keys at rest: encrypted under the key-encryption key (KEK), bound to their
kid; where the KEK comes from; `neglect-service keys rotate` and `keys list`."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from service.auth.key_encryption import (
    DEVELOPMENT_KEY_FILE,
    KeyEncryptionKey,
    KeyEncryptionKeyMissing,
    SigningKeyUnreadable,
    decrypt_private_key,
    key_encryption_key,
)
from service.auth.keys import KeyRing, new_signing_key, retired_key_window_s
from service.cli.main import app as cli_app
from service.db import SessionFactory, transaction
from service.models import SigningKey
from service.settings import Settings, get_settings
from tests.conftest import TEST_KEY_ENCRYPTION_KEY


def _kek(encoded: str = TEST_KEY_ENCRYPTION_KEY) -> KeyEncryptionKey:
    return KeyEncryptionKey(base64.b64decode(encoded))


def _random_kek_text() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _settings(**values: object) -> Settings:
    """Settings from these values alone, whatever NEGLECT_* the shell running the tests has."""
    base: dict[str, object] = {
        "database_url": "postgresql://postgres@127.0.0.1/neglect",
        "key_encryption_key": None,
        "key_encryption_key_file": None,
    }
    return Settings.model_validate({**base, **values})


async def _signing_key_rows(database_url: str) -> list[asyncpg.Record]:
    plain = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(plain)
    try:
        return list(await connection.fetch("SELECT * FROM signing_key"))
    finally:
        await connection.close()


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return json.dumps(value, default=str).encode() if not isinstance(value, str) else value.encode()


# --- At rest -------------------------------------------------------------------------------------


async def test_the_database_holds_no_plaintext_private_key(
    app: FastAPI, database_url: str, session_factory: SessionFactory
) -> None:
    retired = new_signing_key(_kek())
    retired.retired_at = datetime.now(UTC)
    async with transaction(session_factory) as session:
        session.add(retired)
    ring: KeyRing = await app.state.key_ring()
    private = serialization.load_pem_private_key(ring.active_private_pem.encode(), None)
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem_body = "".join(ring.active_private_pem.strip().splitlines()[1:-1]).encode()
    rows = await _signing_key_rows(database_url)
    assert len(rows) >= 2
    columns = set(rows[0].keys())
    assert "private_pem" not in columns
    assert {"encrypted_private_key", "kek_id"} <= columns
    for row in rows:
        for name, value in row.items():
            stored = _as_bytes(value)
            assert b"PRIVATE KEY" not in stored, name
            assert der not in stored, name
            assert pem_body[:64] not in stored, name
        assert not {"d", "p", "q"} & set(json.loads(row["public_jwk"]))
        assert len(row["kek_id"]) == 16
    [active] = [row for row in rows if row["retired_at"] is None]
    assert active["kek_id"] == _kek().kek_id


async def test_the_stored_key_decrypts_to_the_key_that_signs(
    app: FastAPI, session_factory: SessionFactory
) -> None:
    ring: KeyRing = await app.state.key_ring()
    async with transaction(session_factory) as session:
        stored = await session.get(SigningKey, ring.active_kid)
    assert stored is not None
    decrypted = decrypt_private_key(_kek(), stored.kid, stored.kek_id, stored.encrypted_private_key)
    assert decrypted.decode() == ring.active_private_pem


def test_an_encrypted_key_copied_to_another_kid_does_not_decrypt() -> None:
    kek = _kek(_random_kek_text())
    first, second = new_signing_key(kek), new_signing_key(kek)
    with pytest.raises(SigningKeyUnreadable, match=f"signing key {second.kid} does not decrypt"):
        decrypt_private_key(kek, second.kid, kek.kek_id, first.encrypted_private_key)


def test_an_altered_encrypted_key_does_not_decrypt() -> None:
    kek = _kek(_random_kek_text())
    key = new_signing_key(kek)
    altered = bytearray(key.encrypted_private_key)
    altered[-1] ^= 1
    with pytest.raises(SigningKeyUnreadable, match="does not decrypt"):
        decrypt_private_key(kek, key.kid, kek.kek_id, bytes(altered))


def test_a_key_encrypted_with_another_kek_is_named_as_such() -> None:
    mine, theirs = _kek(_random_kek_text()), _kek(_random_kek_text())
    key = new_signing_key(theirs)
    with pytest.raises(SigningKeyUnreadable) as caught:
        decrypt_private_key(mine, key.kid, key.kek_id, key.encrypted_private_key)
    assert f"encrypted with key-encryption key {theirs.kek_id}" in str(caught.value)
    assert f"the configured one is {mine.kek_id}" in str(caught.value)


def test_the_kek_id_reveals_nothing_of_the_kek() -> None:
    kek = _kek(_random_kek_text())
    assert kek.kek_id not in kek.key.hex()
    assert len(kek.kek_id) == 16
    assert kek.kek_id == KeyEncryptionKey(kek.key).kek_id
    assert "key=" not in repr(kek)


# --- Where the KEK comes from ---------------------------------------------------------------------


def test_production_without_a_kek_is_refused_with_what_to_set() -> None:
    settings = _settings(env="production")
    with pytest.raises(KeyEncryptionKeyMissing) as caught:
        key_encryption_key(settings)
    message = str(caught.value)
    assert "NEGLECT_KEY_ENCRYPTION_KEY" in message
    assert "NEGLECT_KEY_ENCRYPTION_KEY_FILE" in message
    assert "openssl rand -base64 32" in message


def test_a_real_database_url_means_production_unless_told() -> None:
    assert _settings().env == "production"
    assert _settings(database_url=None).env == "development"
    assert _settings(env="development").env == "development"
    assert _settings(database_url=None, env="production").env == "production"


def test_the_kek_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = _random_kek_text()
    monkeypatch.setenv("NEGLECT_KEY_ENCRYPTION_KEY", encoded)
    monkeypatch.setenv("NEGLECT_ENV", "production")
    monkeypatch.delenv("NEGLECT_KEY_ENCRYPTION_KEY_FILE", raising=False)
    assert key_encryption_key(Settings()).key == base64.b64decode(encoded)


def test_the_kek_is_read_from_a_secret_file(tmp_path: Path) -> None:
    encoded = base64.urlsafe_b64encode(os.urandom(32)).decode()
    path = tmp_path / "kek"
    path.write_text(encoded + "\n", encoding="ascii")
    kek = key_encryption_key(_settings(env="production", key_encryption_key_file=path))
    assert kek.key == base64.urlsafe_b64decode(encoded)


def test_an_unreadable_or_malformed_kek_file_is_refused_by_name(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    short = tmp_path / "short"
    short.write_text(base64.b64encode(b"sixteen bytes!!!").decode(), encoding="ascii")
    with pytest.raises(KeyEncryptionKeyMissing, match=f"cannot read .*{missing.name}"):
        key_encryption_key(_settings(key_encryption_key_file=missing))
    with pytest.raises(KeyEncryptionKeyMissing, match="32 random bytes"):
        key_encryption_key(_settings(key_encryption_key_file=short))


def test_a_malformed_kek_is_refused_without_repeating_it() -> None:
    almost = base64.b64encode(os.urandom(31)).decode()
    with pytest.raises(ValidationError) as caught:
        _settings(key_encryption_key=almost)
    assert "32 random bytes in base64" in str(caught.value)
    assert almost not in str(caught.value)


def test_a_kek_and_a_kek_file_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        _settings(key_encryption_key=_random_kek_text(), key_encryption_key_file=tmp_path / "k")


def test_development_makes_its_own_kek_once_readable_by_the_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = key_encryption_key(_settings(env="development"))
    second = key_encryption_key(_settings(env="development"))
    assert first.key == second.key
    mode = stat.S_IMODE((tmp_path / DEVELOPMENT_KEY_FILE).stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE((tmp_path / DEVELOPMENT_KEY_FILE).parent.stat().st_mode) == 0o700
    assert [path.name for path in (tmp_path / DEVELOPMENT_KEY_FILE).parent.iterdir()] == [
        DEVELOPMENT_KEY_FILE.name
    ]


def test_a_configured_kek_wins_over_the_development_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    encoded = _random_kek_text()
    kek = key_encryption_key(_settings(env="development", key_encryption_key=encoded))
    assert kek.key == base64.b64decode(encoded)
    assert not (tmp_path / DEVELOPMENT_KEY_FILE).exists()


# --- The command line -----------------------------------------------------------------------------


@pytest.fixture
def cli_keys(runtime_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", runtime_database_url)
    monkeypatch.setenv("NEGLECT_ENV", "production")
    monkeypatch.setenv("NEGLECT_KEY_ENCRYPTION_KEY", TEST_KEY_ENCRYPTION_KEY)
    monkeypatch.delenv("NEGLECT_KEY_ENCRYPTION_KEY_FILE", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("cli_keys")
def test_keys_rotate_retires_the_signing_key_and_deletes_keys_no_longer_published(
    database_url: str,
) -> None:
    window = retired_key_window_s(get_settings())
    stale = new_signing_key(_kek())
    long_ago = datetime.now(UTC) - timedelta(seconds=window + 60)

    async def add_stale_key() -> None:
        connection = await asyncpg.connect(
            make_url(database_url).set(drivername="postgresql").render_as_string(False)
        )
        try:
            await connection.execute(
                "INSERT INTO signing_key (kid, algorithm, encrypted_private_key, kek_id,"
                " public_jwk, retired_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
                stale.kid,
                stale.algorithm,
                stale.encrypted_private_key,
                stale.kek_id,
                json.dumps(stale.public_jwk),
                long_ago,
            )
        finally:
            await connection.close()

    asyncio.run(add_stale_key())
    before = json.loads(CliRunner().invoke(cli_app, ["keys", "list", "--json"]).stdout)
    signing_before = [row["kid"] for row in before if row["retired_at"] is None]

    result = CliRunner().invoke(cli_app, ["keys", "rotate", "--json"])

    assert result.exit_code == 0, result.output
    rotation = json.loads(result.stdout)
    assert rotation["retired"] == signing_before
    assert stale.kid in rotation["deleted"]
    assert rotation["retired_published_for_s"] == window
    after = json.loads(CliRunner().invoke(cli_app, ["keys", "list", "--json"]).stdout)
    assert after[0]["kid"] == rotation["kid"]
    assert after[0]["retired_at"] is None
    assert after[0]["kek_id"] == _kek().kek_id
    assert [row["kid"] for row in after if row["retired_at"] is None] == [rotation["kid"]]
    assert stale.kid not in {row["kid"] for row in after}
    retired = next(row for row in after if row["kid"] == signing_before[0])
    published_until = datetime.fromisoformat(retired["published_until"])
    assert published_until == datetime.fromisoformat(retired["retired_at"]) + timedelta(
        seconds=window
    )


@pytest.mark.usefixtures("cli_keys")
def test_keys_rotate_without_a_kek_in_production_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NEGLECT_KEY_ENCRYPTION_KEY")
    get_settings.cache_clear()
    before = CliRunner().invoke(cli_app, ["keys", "list", "--json"])
    result = CliRunner().invoke(cli_app, ["keys", "rotate"])
    after = CliRunner().invoke(cli_app, ["keys", "list", "--json"])
    assert result.exit_code == 2
    assert "no key-encryption key: set NEGLECT_KEY_ENCRYPTION_KEY" in result.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout)
