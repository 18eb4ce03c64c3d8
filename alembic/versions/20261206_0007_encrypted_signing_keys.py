"""signing keys encrypted at rest: `private_pem` gives way to `encrypted_private_key` + `kek_id`

The private half of each signing key was stored as plaintext PEM. From this revision it is only
stored encrypted with AES-256-GCM under the key-encryption key (KEK), bound to the key's `kid`
(`service/auth/key_encryption.py` has the format; a frozen copy is below, so this migration keeps
its meaning whatever that module becomes).

Existing keys, upgrade: with the KEK in the environment of the migration
(`NEGLECT_KEY_ENCRYPTION_KEY`, or the file named by `NEGLECT_KEY_ENCRYPTION_KEY_FILE`) every key
is encrypted in place, and tokens already issued keep verifying. Without one the migration cannot
encrypt them and deletes them instead: the service makes a new key when it starts, and tokens
signed by the deleted keys stop verifying at once. They live 15 minutes by default (at most an
hour); clients ask for a new token, as they would on expiry. A malformed KEK stops the
migration rather than deleting anything.

Downgrade: the reverse. With the KEK the keys are decrypted back into `private_pem`, without it
(or for a key another KEK encrypted) they are deleted.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-06 10:00:00+00:00
"""

import base64
import binascii
import hashlib
import hmac
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("alembic.runtime.migration")

# Frozen copy of the format of service/auth/key_encryption.py as of this revision.
_NONCE_BYTES = 12
_ID_LABEL = b"neglect-service key-encryption-key id"
_AAD_LABEL = b"neglect-service signing key\x00"


def _kek() -> bytes | None:
    encoded = os.environ.get("NEGLECT_KEY_ENCRYPTION_KEY")
    path = os.environ.get("NEGLECT_KEY_ENCRYPTION_KEY_FILE")
    if encoded and path:
        raise RuntimeError(
            "set NEGLECT_KEY_ENCRYPTION_KEY or NEGLECT_KEY_ENCRYPTION_KEY_FILE, not both"
        )
    if path:
        encoded = Path(path).read_text(encoding="ascii")
    if not encoded:
        return None
    try:
        raw = base64.b64decode(encoded.strip().replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise RuntimeError("the key-encryption key must be 32 random bytes in base64")
    return raw


def _kek_id(kek: bytes) -> str:
    return hmac.new(kek, _ID_LABEL, hashlib.sha256).hexdigest()[:16]


def _aad(kid: str) -> bytes:
    return _AAD_LABEL + kid.encode()


def upgrade() -> None:
    op.add_column(
        "signing_key", sa.Column("encrypted_private_key", sa.LargeBinary(), nullable=True)
    )
    op.add_column("signing_key", sa.Column("kek_id", sa.String(length=32), nullable=True))
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT kid, private_pem FROM signing_key")).all()
    kek = _kek() if rows else None
    if rows and kek is None:
        logger.warning(
            "no key-encryption key in the environment: deleting %d plaintext signing keys; "
            "the service makes a new one when it starts",
            len(rows),
        )
        connection.execute(sa.text("DELETE FROM signing_key"))
    elif kek is not None:
        for kid, private_pem in rows:
            nonce = os.urandom(_NONCE_BYTES)
            encrypted = nonce + AESGCM(kek).encrypt(nonce, bytes(private_pem), _aad(kid))
            connection.execute(
                sa.text(
                    "UPDATE signing_key SET encrypted_private_key = :encrypted, kek_id = :kek_id"
                    " WHERE kid = :kid"
                ),
                {"encrypted": encrypted, "kek_id": _kek_id(kek), "kid": kid},
            )
    op.alter_column("signing_key", "encrypted_private_key", nullable=False)
    op.alter_column("signing_key", "kek_id", nullable=False)
    op.drop_column("signing_key", "private_pem")


def downgrade() -> None:
    op.add_column("signing_key", sa.Column("private_pem", sa.LargeBinary(), nullable=True))
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT kid, encrypted_private_key, kek_id FROM signing_key")
    ).all()
    kek = _kek() if rows else None
    for kid, encrypted, kek_id in rows:
        if kek is None or kek_id != _kek_id(kek):
            connection.execute(sa.text("DELETE FROM signing_key WHERE kid = :kid"), {"kid": kid})
            continue
        encrypted = bytes(encrypted)
        private_pem = AESGCM(kek).decrypt(
            encrypted[:_NONCE_BYTES], encrypted[_NONCE_BYTES:], _aad(kid)
        )
        connection.execute(
            sa.text("UPDATE signing_key SET private_pem = :pem WHERE kid = :kid"),
            {"pem": private_pem, "kid": kid},
        )
    op.alter_column("signing_key", "private_pem", nullable=False)
    op.drop_column("signing_key", "kek_id")
    op.drop_column("signing_key", "encrypted_private_key")
