"""Configuration: one validated `Settings`, read from the environment once."""

from __future__ import annotations

import base64
import binascii
from functools import cache
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})
KEY_ENCRYPTION_KEY_BYTES = 32


def decode_key_encryption_key(encoded: str) -> bytes:
    """The key-encryption key from its text form: 32 bytes in base64 (standard or URL-safe
    alphabet), as `openssl rand -base64 32` prints them. The error never repeats the value."""
    try:
        raw = base64.b64decode(encoded.strip().replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_ENCRYPTION_KEY_BYTES:
        raise ValueError(
            "the key-encryption key must be 32 random bytes in base64; "
            "make one with `openssl rand -base64 32`"
        )
    return raw


Environment = Literal["development", "production"]


def _default_env(data: dict[str, Any]) -> Environment:
    # Without a database URL the service runs on the embedded server, which only a developer's
    # checkout has (the image leaves it out); any real database means production unless told.
    return "development" if data.get("database_url") is None else "production"


class Settings(BaseSettings):
    """Every setting is `NEGLECT_<NAME>`; the database URL is also read from `DATABASE_URL`."""

    # A rejected value is not echoed: it may be a key or a URL with a password in it.
    model_config = SettingsConfigDict(
        env_prefix="NEGLECT_", extra="ignore", hide_input_in_errors=True
    )

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("NEGLECT_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL URL; unset means the embedded server under `embedded_pgdata`.",
    )
    embedded_pgdata: Path = Field(
        default=Path(".pgdata"),
        description="Data folder of the embedded PostgreSQL; keep its path short (unix socket).",
    )
    env: Environment = Field(
        default_factory=_default_env,
        description="`development` may make its own key-encryption key; `production` needs one. "
        "Defaults to `development` on the embedded server, else `production`.",
    )
    key_encryption_key: SecretStr | None = Field(
        default=None,
        description="Encrypts the signing keys in the database: 32 random bytes, base64.",
    )
    key_encryption_key_file: Path | None = Field(
        default=None, description="A file holding the key-encryption key (a secret mount)."
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_pool_timeout_s: float = Field(default=5.0, gt=0)
    db_statement_timeout_ms: int = Field(default=15_000, ge=100)

    issuer: str = Field(default="http://localhost:8000", description="`iss` of our own tokens")
    audience: str = Field(default="neglect-service", description="`aud` every token must carry")
    token_ttl_s: int = Field(default=900, ge=60, le=3600)
    jwt_leeway_s: int = Field(default=30, ge=0, le=60)
    jwt_algorithms: list[str] = Field(default=["RS256"])
    external_issuer: str | None = Field(
        default=None, description="`iss` of a trusted external identity provider"
    )
    external_jwks_url: str | None = Field(default=None, description="JWKS URL of that provider")
    jwks_refetch_interval_s: float = Field(default=60.0, ge=1.0)
    signing_key_reload_interval_s: float = Field(
        default=60.0,
        ge=1.0,
        le=3600.0,
        description="Each process reloads the signing keys this often (sees `keys rotate`).",
    )

    token_failures_per_client: int = Field(
        default=10,
        ge=1,
        description="Failed token requests naming one client id per window before 429",
    )
    token_failures_per_address: int = Field(
        default=100,
        ge=1,
        description="Failed token requests from one address per window before 429",
    )
    token_failure_window_s: int = Field(default=60, ge=1, le=86_400)
    # Far above what one client drives through `make bench` (about 1,000 a second): a safety net
    # against a runaway client, not a tariff. 0 turns the quota off.
    api_requests_per_minute: int = Field(default=120_000, ge=0)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # A census file is one upload of every child the council returns: far over max_body_bytes.
    max_census_file_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    workers: int = Field(default=1, ge=1, le=64)
    docs_enabled: bool = Field(
        default=True,
        description="Serve /docs, /redoc and /openapi.json; turn off in production if wanted",
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        # A plain string: unix-socket URLs (`postgresql://u@/db?host=/dir`) have no host part,
        # which pydantic's PostgresDsn refuses.
        if value is None or not value.strip():
            return None
        try:
            url = make_url(value.replace("postgres://", "postgresql://", 1))
        except ArgumentError as exc:
            raise ValueError("not a database URL") from exc
        if not url.drivername.startswith("postgresql"):
            raise ValueError("must be a PostgreSQL URL")
        return value

    @field_validator("key_encryption_key")
    @classmethod
    def _key_encryption_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_key_encryption_key(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _one_key_encryption_key(self) -> Self:
        if self.key_encryption_key is not None and self.key_encryption_key_file is not None:
            raise ValueError(
                "set NEGLECT_KEY_ENCRYPTION_KEY or NEGLECT_KEY_ENCRYPTION_KEY_FILE, not both"
            )
        return self

    @field_validator("jwt_algorithms")
    @classmethod
    def _only_asymmetric(cls, value: list[str]) -> list[str]:
        # `none` and HS* would let anyone holding the public key mint tokens.
        bad = [alg for alg in value if alg not in ASYMMETRIC_ALGORITHMS]
        if bad or not value:
            raise ValueError(f"only asymmetric algorithms are allowed, not {bad or 'none'}")
        return value

    @field_validator("external_jwks_url")
    @classmethod
    def _jwks_needs_https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("https://", "http://127.", "http://localhost")
        ):
            raise ValueError("the JWKS URL must be https (or loopback for tests)")
        return value


@cache
def get_settings() -> Settings:
    """The one settings instance of the process."""
    return Settings()
