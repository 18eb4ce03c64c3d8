"""Standard Webhooks signatures (v1.0.0, "Signature scheme") and the secrets behind them.

A secret is `whsec_` followed by the base64 of 32 random bytes (the specification allows 24 to
64); the HMAC key is those bytes. Each attempt signs `{webhook-id}.{webhook-timestamp}.{body}`
with HMAC-SHA256 and sends `v1,<base64 of the MAC>`; during a rotation one such entry per valid
secret, space-separated, so a receiver holding either secret accepts.

Secrets are stored encrypted under the key-encryption key (`service.auth.key_encryption`), bound
to their subscription's id, so a value copied onto another subscription does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag

from service.auth.key_encryption import KeyEncryptionKey, decrypt_with, encrypt_with

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES: Final = 32
_AAD_LABEL: Final = b"neglect-service webhook secret\x00"


class SecretUnreadable(RuntimeError):
    """A stored webhook secret does not decrypt with the configured key-encryption key."""


def new_secret() -> str:
    """A fresh secret, as the subscriber is shown it once."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: the bytes its base64 stands for."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    # The reference library pads before decoding, so an unpadded secret reads the same.
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `webhook-signature` entry: `v1,` and the base64 HMAC-SHA256 of id.timestamp.body."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: one entry per secret, space-separated."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets)


def _aad(subscription_id: uuid.UUID) -> bytes:
    return _AAD_LABEL + str(subscription_id).encode()


def encrypt_secret(kek: KeyEncryptionKey, subscription_id: uuid.UUID, secret: str) -> bytes:
    return encrypt_with(kek, _aad(subscription_id), secret.encode())


def decrypt_secret(
    kek: KeyEncryptionKey, subscription_id: uuid.UUID, kek_id: str, encrypted: bytes
) -> str:
    if kek_id != kek.kek_id:
        raise SecretUnreadable(
            f"the secret of webhook subscription {subscription_id} was encrypted with "
            f"key-encryption key {kek_id}, but the configured one is {kek.kek_id}"
        )
    try:
        return decrypt_with(kek, _aad(subscription_id), encrypted).decode()
    except InvalidTag as exc:
        raise SecretUnreadable(
            f"the secret of webhook subscription {subscription_id} does not decrypt"
        ) from exc
