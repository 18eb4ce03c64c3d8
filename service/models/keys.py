"""The built-in issuer's signing keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, LargeBinary, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from .base import now_column as _now_column


class SigningKey(SQLModel, table=True):
    """The built-in issuer's key pairs, shared by every replica through the database.

    The private half is only stored encrypted (`service.auth.key_encryption`): AES-256-GCM under
    the key-encryption key named by `kek_id`, bound to `kid`."""

    __tablename__ = "signing_key"

    kid: str = Field(sa_column=Column(String(64), primary_key=True))
    algorithm: str = Field(sa_column=Column(String(10), nullable=False))
    encrypted_private_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    kek_id: str = Field(sa_column=Column(String(32), nullable=False))
    public_jwk: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    retired_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
