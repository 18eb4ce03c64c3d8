"""API clients (machine callers)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from .common import PublicModel, ShortText, StrictModel
from .examples import CLIENT_CREATE_EXAMPLE

AgencyType = Literal[
    "front_door",
    "local_authority",
    "school",
    "education",
    "health",
    "police",
    "early_help",
    "voluntary",
    "other",
]

Scope = Literal[
    "referrals:write",
    "referrals:read",
    "referrals:read:all",
    "referrals:decide",
    "assessments:write",
    "assessments:read",
    "case-events:write",
    "audits:write",
    "audits:read",
    "indicators:read",
    "indicators:read:unsuppressed",
    "audit:read",
    "webhooks:manage",
    "admin",
]

ClientId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:@\-]{3,64}$")]


class ClientCreate(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [CLIENT_CREATE_EXAMPLE]})

    name: ShortText
    agency_type: AgencyType
    agency_name: ShortText
    scopes: list[Scope] = Field(min_length=1, max_length=20)
    issuer: (
        Annotated[str, StringConstraints(max_length=300, pattern=r"^https?://[!-~]+$")] | None
    ) = Field(
        default=None,
        description="For a client whose tokens come from an external identity provider",
    )
    client_id: ClientId | None = Field(
        default=None, description="The external provider's client id; only with `issuer`"
    )


class ClientPublic(PublicModel):
    client_id: str
    name: str
    agency_type: str
    agency_name: str
    allowed_scopes: list[str]
    issuer: str | None
    enabled: bool
    created_at: datetime | None
    disabled_at: datetime | None


class ClientCreated(ClientPublic):
    client_secret: str | None = Field(description="Shown once; store it now")


class ClientSecretRotated(ClientPublic):
    client_secret: str = Field(
        description="The new secret, shown once; the old one no longer works"
    )
