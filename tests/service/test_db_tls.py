"""TLS to PostgreSQL (`NEGLECT_DB_SSLMODE`, `NEGLECT_DB_SSLROOTCERT`, or libpq's `sslmode` and
`sslrootcert` in the URL), against an endpoint that accepts only TLS, with a certificate for
127.0.0.1 from a throwaway certificate authority.

The endpoint is a PgBouncer in front of the test database's server (TLS on, non-TLS refused): the
embedded PostgreSQL is built without TLS, PgBouncer with it, and a managed database is often
reached through such a pooler anyway. What is under test is the client side: the mode, the root
certificate, the host name check, and the URL parameters managed services print.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.db import create_engine, create_pool, create_session_factory
from service.migrations import migrate_database
from service.settings import Settings
from tests.servers import PgBouncer


@dataclass
class TlsServer:
    bouncer: PgBouncer
    database: str
    ca: Path
    other_ca: Path

    def url(self, host: str = "127.0.0.1", **query: str) -> str:
        base = f"postgresql://{self.bouncer.user}@{host}:{self.bouncer.port}/{self.database}"
        return base + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def _authority(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _server_certificate(
    authority: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
) -> tuple[bytes, bytes]:
    """A certificate naming 127.0.0.1 only (not `localhost`), and its key, both as PEM."""
    ca_key, ca_certificate = authority
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def tls_server(database_url: str) -> Iterator[TlsServer]:
    folder = Path(tempfile.mkdtemp(prefix="ns-tls-", dir="/tmp"))
    try:
        authority = _authority("neglect-service test CA")
        certificate, key = _server_certificate(authority)
        (folder / "server.crt").write_bytes(certificate)
        (folder / "server.key").write_bytes(key)
        (folder / "server.key").chmod(0o600)
        ca = folder / "root.crt"
        ca.write_bytes(authority[1].public_bytes(serialization.Encoding.PEM))
        other_ca = folder / "other-root.crt"
        other_ca.write_bytes(
            _authority("someone else's CA")[1].public_bytes(serialization.Encoding.PEM)
        )
        bouncer = PgBouncer(
            folder,
            database_url,
            pool_mode="session",
            client_tls_sslmode="require",
            client_tls_cert_file=str(folder / "server.crt"),
            client_tls_key_file=str(folder / "server.key"),
            # The service's session-mode startup parameters: not what is under test here.
            ignore_startup_parameters="statement_timeout,plan_cache_mode",
        )
        bouncer.start()
        try:
            yield TlsServer(bouncer, str(make_url(database_url).database), ca, other_ca)
        finally:
            bouncer.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tls_settings(**update: Any) -> Settings:
    return Settings(database_url=None, **update)


def tls_version(connection: Any) -> str | None:
    """The TLS version an asyncpg connection speaks, None without TLS."""
    ssl_object = connection._transport.get_extra_info("ssl_object")
    return None if ssl_object is None else str(ssl_object.version())


async def ssl_through_engine(settings: Settings, url: str) -> bool:
    """Whether the engine's connection is TLS (and answers a query over it)."""
    engine = create_engine(settings, url)
    try:
        async with create_session_factory(engine)() as session:
            assert await session.scalar(text("SELECT 1")) == 1
            raw = (await (await session.connection()).get_raw_connection()).driver_connection
            return tls_version(raw) is not None
    finally:
        await engine.dispose()


async def ssl_through_pool(settings: Settings, url: str) -> bool:
    """Whether the driver pool's connection is TLS (and answers a query over it)."""
    pool = await create_pool(settings, url)
    try:
        async with pool.acquire() as connection:
            assert await connection.fetchval("SELECT 1") == 1
            return tls_version(connection) is not None
    finally:
        await pool.close()


async def test_verify_full_with_the_root_certificate_setting_connects_over_tls(
    tls_server: TlsServer,
) -> None:
    settings = tls_settings(db_sslmode="verify-full", db_sslrootcert=tls_server.ca)
    assert await ssl_through_engine(settings, tls_server.url())
    assert await ssl_through_pool(settings, tls_server.url())


async def test_libpq_tls_parameters_in_the_url_work_for_the_engine_and_the_pool(
    tls_server: TlsServer,
) -> None:
    # As a managed service prints its connection string; asyncpg would refuse `sslmode`.
    url = tls_server.url(sslmode="verify-full", sslrootcert=str(tls_server.ca))
    assert await ssl_through_engine(tls_settings(), url)
    assert await ssl_through_pool(tls_settings(), url)


def test_migrations_run_over_tls_from_the_url(tls_server: TlsServer) -> None:
    # The endpoint refuses connections without TLS, so Alembic connected with these parameters.
    migrate_database(tls_server.url(sslmode="verify-full", sslrootcert=str(tls_server.ca)))
    settings = tls_settings(db_sslmode="verify-full", db_sslrootcert=tls_server.ca)

    async def version() -> str | None:
        engine = create_engine(settings, tls_server.url())
        try:
            async with create_session_factory(engine)() as session:
                found = await session.scalar(text("SELECT version_num FROM alembic_version"))
                return None if found is None else str(found)
        finally:
            await engine.dispose()

    assert asyncio.run(version())


async def test_a_server_certificate_from_another_authority_is_refused(
    tls_server: TlsServer,
) -> None:
    settings = tls_settings(db_sslmode="verify-full", db_sslrootcert=tls_server.other_ca)
    with pytest.raises(ssl.SSLCertVerificationError):
        await ssl_through_pool(settings, tls_server.url())


async def test_verify_full_checks_the_host_name_and_verify_ca_does_not(
    tls_server: TlsServer,
) -> None:
    # The certificate names 127.0.0.1, not localhost.
    full = tls_settings(db_sslmode="verify-full", db_sslrootcert=tls_server.ca)
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        await ssl_through_pool(full, tls_server.url(host="localhost"))
    chain_only = tls_settings(db_sslmode="verify-ca", db_sslrootcert=tls_server.ca)
    assert await ssl_through_pool(chain_only, tls_server.url(host="localhost"))


async def test_the_setting_overrides_the_url_and_disable_sends_no_tls(
    tls_server: TlsServer,
) -> None:
    url = tls_server.url(sslmode="verify-full", sslrootcert=str(tls_server.ca))
    # The endpoint accepts only TLS, so a connection without it is refused.
    with pytest.raises(Exception, match="SSL required"):
        await ssl_through_pool(tls_settings(db_sslmode="disable"), url)


def test_a_root_certificate_that_does_not_exist_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no such file"):
        tls_settings(db_sslrootcert=tmp_path / "missing.crt")
