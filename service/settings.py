"""Configuration: one validated `Settings`, read from the environment once."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from functools import cache
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from schemas.open_data import OpenDataLevel

ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})
KEY_ENCRYPTION_KEY_BYTES = 32
# A database role name that needs no more quoting than double quotes.
ROLE_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"


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


_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Network("::1/128")


def is_loopback_network(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """Whether every address of `network` is loopback: all the webhook allow-list may hold in
    production."""
    if isinstance(network, ipaddress.IPv4Network):
        return network.subnet_of(_LOOPBACK_V4)
    return network == _LOOPBACK_V6


Environment = Literal["development", "production"]
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

IssuerPreset = Literal["entra-id-v1", "entra-id-v2", "keycloak"]
ClientClaim = Literal["client_id", "azp", "appid", "sub"]
ScopeClaim = Literal["scope", "scp", "roles"]


def https_or_loopback(value: str, what: str) -> str:
    """An identity provider's URL: https, or plain http on this machine only (tests, a local
    provider). Keys fetched over plain http across a network could be anyone's."""
    parts = urlsplit(value)
    loopback = parts.hostname in {"localhost", "::1"} or (parts.hostname or "").startswith("127.")
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and loopback:
        return value
    raise ValueError(f"{what} must be an https URL (plain http only on loopback)")


class TrustedIssuer(BaseModel):
    """One external identity provider whose tokens are accepted: an item of
    `NEGLECT_TRUSTED_ISSUERS`. Unset fields take the preset's value (`service/auth/issuers.py`),
    or the generic one without a preset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1, description="`iss` of its tokens, exactly")
    preset: IssuerPreset | None = None
    jwks_url: str | None = Field(
        default=None, description="Its JWKS; unset means discovered from the issuer"
    )
    audiences: list[str] | None = Field(
        default=None, min_length=1, description="Accepted `aud` values; unset: NEGLECT_AUDIENCE"
    )
    client_claims: list[ClientClaim] | None = Field(
        default=None, min_length=1, description="Claims naming the client, the first present wins"
    )
    scope_claims: list[ScopeClaim] | None = Field(
        default=None, min_length=1, description="Claims carrying scopes (all are read)"
    )
    typ: list[str | None] | None = Field(
        default=None, min_length=1, description="Accepted header `typ` values; null: none sent"
    )
    required_claims: dict[str, list[str]] | None = Field(
        default=None, description="Claims that must hold one of the listed strings"
    )
    refused_claims: list[str] | None = Field(
        default=None, description="Claims a token must not carry"
    )
    feed_audiences: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Accepted `aud` of users' delegated tokens (Entra ID presets only), which "
        "open the indicators and the OData feed and nothing else; unset: delegated tokens are "
        "refused",
    )
    feed_scope: str = Field(
        default="user_impersonation",
        pattern=r"^[!#-\[\]-~]+$",
        description="The delegated scope a user's token must hold in `scp` to read the feed",
    )

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        return https_or_loopback(value, "the issuer")

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        return None if value is None else https_or_loopback(value, "the JWKS URL")

    @model_validator(mode="after")
    def _feed_audiences_need_entra(self) -> Self:
        # Only Entra ID's delegated-token shape (`scp`, the user in `oid`) is known here.
        if self.feed_audiences and self.preset not in ("entra-id-v1", "entra-id-v2"):
            raise ValueError("feed_audiences needs the entra-id-v1 or entra-id-v2 preset")
        return self


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
    owner_database_url: str | None = Field(
        default=None,
        description="URL of the role that owns the tables: `migrate`, `db roles`, `demo-data` "
        "and `audit verify` use it. Unset means `DATABASE_URL` (one role for everything). "
        "Required in `transaction` pool mode, and then a direct connection to the primary, not "
        "through the pooler (migrations hold session locks).",
    )
    runtime_role: str | None = Field(
        default=None,
        pattern=ROLE_NAME_PATTERN,
        description="The role `db roles` creates and grants; unset means the user of "
        "`DATABASE_URL` when an owner URL is set apart from it, else `neglect_app`.",
    )
    runtime_role_password: SecretStr | None = Field(
        default=None, description="Password `db roles` gives the runtime role (unset: unchanged)."
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
    read_database_url: str | None = Field(
        default=None,
        description="A read-only replica for the indicator series, the figures of an OData "
        "feed pull, and the audit-event and toolkit lists; unset means the primary.",
    )
    read_max_lag_s: float = Field(
        default=30.0,
        gt=0,
        description="A replica further behind than this is passed over for the primary.",
    )
    db_pool_mode: Literal["session", "transaction"] = Field(
        default="session",
        description="`transaction` behind a transaction-mode pooler (PgBouncer): no startup "
        "parameters, no prepared statement kept across transactions.",
    )
    db_sslmode: SslMode | None = Field(
        default=None,
        description="TLS to PostgreSQL, as libpq's `sslmode`; unset means the URL's "
        "`sslmode`, else asyncpg's default (`prefer`).",
    )
    db_sslrootcert: Path | None = Field(
        default=None,
        description="CA certificate(s) the server's certificate must chain to; unset means "
        "the URL's `sslrootcert`, else the system's trust store.",
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_pool_timeout_s: float = Field(default=5.0, gt=0)
    db_statement_timeout_ms: int = Field(default=15_000, ge=100)

    public_url: str | None = Field(
        default=None,
        description="Base URL clients reach the service at: the metadata's endpoints, the `iss` "
        "of our own tokens and the URLs `neglect-service dev` prints follow it",
    )
    issuer: str = Field(
        default_factory=lambda data: data["public_url"] or "http://localhost:8000",
        description="`iss` of our own tokens; defaults to `public_url`",
    )
    audience: str = Field(default="neglect-service", description="`aud` every token must carry")
    token_ttl_s: int = Field(default=900, ge=60, le=3600)
    jwt_leeway_s: int = Field(default=30, ge=0, le=60)
    jwt_algorithms: list[str] = Field(default=["RS256"])
    trusted_issuers: list[TrustedIssuer] = Field(
        default=[], description="External identity providers whose tokens are accepted (JSON)"
    )
    external_issuer: str | None = Field(
        default=None,
        description="Shorthand for one trusted issuer without a preset (discovered, or at "
        "`external_jwks_url`)",
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

    feed_authorization_uri: str | None = Field(
        default=None,
        description="Entra ID authorize endpoint sent in the feed's 401 challenge "
        "(`https://login.microsoftonline.com/<tenant>/oauth2/authorize`), for Power BI's "
        "Organizational account sign-in",
    )
    feed_page_size: int = Field(
        default=5000, ge=10, le=50_000, description="Rows per page of the OData feed at most"
    )
    feed_snapshot_ttl_s: int = Field(
        default=3600,
        ge=60,
        le=86_400,
        description="How long an OData feed's paging snapshot can be read after its first page",
    )
    indicator_max_staleness_s: float = Field(
        default=3600.0,
        ge=0,
        description="Serve indicator figures from the rollup up to this many seconds after the "
        "refresh that computed them, once writes have overtaken it (the response says how old "
        "they are, `figures_as_of`); 0 serves only an exact rollup, else the live figures",
    )
    indicator_refresh_jobs: int = Field(
        default=2,
        ge=1,
        le=32,
        description="Database sessions a rollup refresh computes the series in at once (each "
        "reads in the refresh's snapshot)",
    )
    indicator_refresh_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often `neglect-service worker` checks whether the indicator rollup "
        "needs a refresh (it refreshes only after writes)",
    )
    feed_months: int = Field(
        default=36, ge=1, le=240, description="Months the OData feed covers by default"
    )
    area_level: OpenDataLevel = Field(
        default="Local authority", description="`geographic_level` of the open-data CSV"
    )
    area_code: str = Field(
        default="x",
        max_length=30,
        description="The partnership's area code (e.g. the local authority's 9-character GSS "
        "code); `x` (not available) until set",
    )
    area_name: str = Field(
        default="Not available", max_length=120, description="The partnership's area name"
    )
    area_old_la_code: str = Field(
        default="",
        max_length=3,
        description="The 3-digit old LA code, for `geographic_level` Local authority",
    )

    webhook_allowed_networks: list[IPvAnyNetwork] = Field(
        default=[],
        description="Networks webhook deliveries may reach although they are not public, and "
        'over plain http, as a JSON list of CIDRs (`["127.0.0.1/32"]` for a test receiver). '
        "For development and the test suite: production admits loopback networks only (the "
        "suite runs with production settings) and a deployment leaves it unset",
    )
    webhook_egress_proxy: SecretStr | None = Field(
        default=None,
        description="An http(s) proxy every webhook delivery goes through (e.g. smokescreen); "
        "it then makes the connections and must refuse internal ranges itself",
    )
    webhook_worker_heartbeat_s: float = Field(
        default=10.0, ge=1.0, le=300.0, description="How often a webhook worker says it is alive"
    )

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # A census file is one upload of every child the council returns: far over max_body_bytes.
    max_census_file_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    workers: int = Field(default=1, ge=1, le=64)
    docs_enabled: bool = Field(
        default=True,
        description="Serve /docs, /redoc and /openapi.json; turn off in production if wanted",
    )

    @field_validator("database_url", "owner_database_url", "read_database_url")
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

    @model_validator(mode="after")
    def _owner_direct_behind_a_pooler(self) -> Self:
        # Migrations and admin commands hold session-level locks and may run statements that
        # cannot be in a transaction: a transaction-mode pooler would hand each transaction to
        # another server connection. The owner's URL is their direct way to the primary.
        if self.db_pool_mode != "transaction":
            return self
        if self.owner_database_url is None:
            raise ValueError(
                "NEGLECT_OWNER_DATABASE_URL: required when NEGLECT_DB_POOL_MODE is transaction "
                "(a direct connection to the primary, not through the pooler)"
            )
        if self.database_url is not None and _server(self.owner_database_url) == _server(
            self.database_url
        ):
            raise ValueError(
                "NEGLECT_OWNER_DATABASE_URL: must be a direct connection to the primary when "
                "NEGLECT_DB_POOL_MODE is transaction, not the pooler DATABASE_URL reaches "
                "(same host and port)"
            )
        return self

    @field_validator("db_sslrootcert")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("no such file")
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

    @field_validator("webhook_egress_proxy")
    @classmethod
    def _egress_proxy_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http or https proxy URL, e.g. http://egress-proxy:4750")
        if parts.path not in {"", "/"} or parts.query or parts.fragment:
            raise ValueError("must be a proxy URL without a path, query or fragment")
        return value

    @model_validator(mode="after")
    def _no_webhook_allow_list_in_production(self) -> Self:
        # A listed network is one partners' URLs may reach inside ours: a metadata endpoint, a
        # database's subnet. The test suite runs with production settings and its receivers on
        # loopback, so production admits loopback, and nothing else, for them.
        if self.env == "production" and not all(
            is_loopback_network(network) for network in self.webhook_allowed_networks
        ):
            raise ValueError(
                "NEGLECT_WEBHOOK_ALLOWED_NETWORKS is for development and the test suite; "
                "production admits loopback networks only (within 127.0.0.0/8, or ::1/128)"
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

    @property
    def base_url(self) -> str:
        """Where clients reach the service: `public_url`, else (as before it existed) `issuer`."""
        return self.public_url or self.issuer

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http or https URL, e.g. https://neglect.example.org")
        if parts.query or parts.fragment:
            raise ValueError("must have no query or fragment")
        return value.rstrip("/")

    @field_validator("external_issuer")
    @classmethod
    def _external_issuer_url(cls, value: str | None) -> str | None:
        return None if value is None else https_or_loopback(value, "the issuer")

    @field_validator("feed_authorization_uri")
    @classmethod
    def _authorization_uri_is_https(cls, value: str | None) -> str | None:
        # It goes into a header: no quote or control character may break out of it.
        if value is not None and (
            not value.startswith("https://") or any(c in value for c in '"\\\r\n ')
        ):
            raise ValueError("the feed authorization URI must be an https URL")
        return value

    @field_validator("external_jwks_url")
    @classmethod
    def _jwks_needs_https(cls, value: str | None) -> str | None:
        return None if value is None else https_or_loopback(value, "the JWKS URL")

    @model_validator(mode="after")
    def _issuers_apart(self) -> Self:
        if self.external_jwks_url is not None and self.external_issuer is None:
            raise ValueError("NEGLECT_EXTERNAL_JWKS_URL needs NEGLECT_EXTERNAL_ISSUER")
        seen = {self.issuer}
        names = [item.issuer for item in self.trusted_issuers]
        names += [self.external_issuer] if self.external_issuer else []
        for name in names:
            if name in seen:
                # Two mappings for one `iss` would make a token's meaning depend on the order.
                raise ValueError(f"the issuer {name} is configured twice (or is our own)")
            seen.add(name)
        return self


def _server(raw: str) -> tuple[str | None, int]:
    """The host (or socket folder) and port a PostgreSQL URL connects to."""
    url = make_url(raw.replace("postgres://", "postgresql://", 1))
    host = url.host or url.query.get("host")
    return (host if isinstance(host, str) else None), url.port or 5432


class InvalidSettings(ValueError):
    """The environment holds a setting the service cannot run with. The message is one line per
    variable, naming it and what it accepts, and never repeats the value (it may be a secret)."""


_FIELD_IN_SOURCE_ERROR = re.compile(r'field "(\w+)"')


def _variable(field_or_alias: str) -> str:
    if field_or_alias in {"database_url", "NEGLECT_DATABASE_URL", "DATABASE_URL"}:
        return "DATABASE_URL (or NEGLECT_DATABASE_URL)"
    if field_or_alias.upper().startswith("NEGLECT_"):
        return field_or_alias.upper()
    return f"NEGLECT_{field_or_alias.upper()}"


def _describe(error: Any) -> str:
    where, *inside = error["loc"] or ("",)
    message = str(error["msg"]).removeprefix("Value error, ")
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in inside)
    if not where:
        return message
    return f"{_variable(str(where))}{path}: {message}"


def load_settings() -> Settings:
    """Settings from the environment, or `InvalidSettings` saying which variable is wrong."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = [
            _describe(error)
            for error in exc.errors()
            # Follows from another error: the default needed a field that failed.
            if error["type"] != "default_factory_not_called"
        ]
        raise InvalidSettings("; ".join(dict.fromkeys(lines))) from None
    except _SourceError as exc:
        # A JSON-valued variable that is not JSON: pydantic-settings names only the field.
        found = _FIELD_IN_SOURCE_ERROR.search(str(exc))
        name = _variable(found.group(1)) if found else "a setting"
        raise InvalidSettings(f"{name}: is not valid JSON (this variable takes JSON)") from None


@cache
def get_settings() -> Settings:
    """The one settings instance of the process; `InvalidSettings` for a bad environment."""
    return load_settings()
