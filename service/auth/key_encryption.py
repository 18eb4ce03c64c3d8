"""The key-encryption key (KEK) that keeps the issuer's private keys (and the webhook signing
secrets, `service.webhooks.signing`) encrypted at rest.

Anyone who could read the `signing_key` table could otherwise mint an admin token. Each private
key is stored encrypted with AES-256-GCM (`cryptography`'s AESGCM) under a KEK that never enters the
database: `NEGLECT_KEY_ENCRYPTION_KEY`, or the file named by `NEGLECT_KEY_ENCRYPTION_KEY_FILE` (a
secret mount). The stored value is a fresh 12-byte nonce followed by the ciphertext and its tag;
the key's `kid` is the associated data, so an encrypted key copied onto another row does not
decrypt. Beside it the row keeps the KEK's identifier, so a key encrypted with another KEK is
named as such rather than failing as a bad tag, and a future re-wrap can find the rows a retired
KEK encrypted.

Outside development the service refuses to start without a KEK. In development (the embedded
server, or `NEGLECT_ENV=development`) one is made on first use in `.secrets/` (git-ignored).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.settings import KEY_ENCRYPTION_KEY_BYTES, Settings, decode_key_encryption_key

DEVELOPMENT_KEY_FILE = Path(".secrets") / "key-encryption-key"
_NONCE_BYTES = 12
_ID_LABEL = b"neglect-service key-encryption-key id"
_AAD_LABEL = b"neglect-service signing key\x00"


class SigningKeyError(RuntimeError):
    """The issuer cannot sign: the message says what to fix."""


class KeyEncryptionKeyMissing(SigningKeyError):
    """No usable key-encryption key is configured."""


class SigningKeyUnreadable(SigningKeyError):
    """A stored private key does not decrypt with the configured key-encryption key."""


@dataclass(frozen=True)
class KeyEncryptionKey:
    key: bytes = field(repr=False)

    @property
    def kek_id(self) -> str:
        """A name for this KEK that reveals nothing about it (an HMAC under the key itself)."""
        return hmac.new(self.key, _ID_LABEL, hashlib.sha256).hexdigest()[:16]


def _aad(kid: str) -> bytes:
    return _AAD_LABEL + kid.encode()


def encrypt_with(kek: KeyEncryptionKey, associated: bytes, plaintext: bytes) -> bytes:
    """A fresh nonce, then the AES-256-GCM ciphertext and tag of `plaintext` under the KEK,
    bound to `associated` (what the value is, and whose)."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(kek.key).encrypt(nonce, plaintext, associated)


def decrypt_with(kek: KeyEncryptionKey, associated: bytes, encrypted: bytes) -> bytes:
    """The plaintext `encrypt_with` encrypted; `InvalidTag` when altered or bound elsewhere."""
    nonce, ciphertext = encrypted[:_NONCE_BYTES], encrypted[_NONCE_BYTES:]
    return AESGCM(kek.key).decrypt(nonce, ciphertext, associated)


def encrypt_private_key(kek: KeyEncryptionKey, kid: str, private_pem: bytes) -> bytes:
    return encrypt_with(kek, _aad(kid), private_pem)


def decrypt_private_key(kek: KeyEncryptionKey, kid: str, kek_id: str, encrypted: bytes) -> bytes:
    if kek_id != kek.kek_id:
        raise SigningKeyUnreadable(
            f"signing key {kid} was encrypted with key-encryption key {kek_id}, but the "
            f"configured one is {kek.kek_id}: configure the key it was made with, or run "
            "`neglect-service keys rotate` with this one"
        )
    try:
        return decrypt_with(kek, _aad(kid), encrypted)
    except InvalidTag as exc:
        raise SigningKeyUnreadable(
            f"signing key {kid} does not decrypt: its stored value was altered or belongs to "
            "another key"
        ) from exc


def _read_key_file(path: Path) -> KeyEncryptionKey:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyEncryptionKeyMissing(
            f"cannot read the key-encryption key file {path}: {type(exc).__name__}"
        ) from exc
    try:
        return KeyEncryptionKey(decode_key_encryption_key(text))
    except ValueError as exc:
        raise KeyEncryptionKeyMissing(f"{path}: {exc}") from exc


def _development_key() -> KeyEncryptionKey:
    """The checkout's own KEK, made once. `make clean` keeps it: a database given with
    `DATABASE_URL` outlives `.pgdata/`, and its keys need this KEK."""
    path = DEVELOPMENT_KEY_FILE
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        encoded = base64.b64encode(os.urandom(KEY_ENCRYPTION_KEY_BYTES)).decode()
        # Written aside, then linked into place: two processes starting together (uvicorn
        # workers) both end up with the first one's key, never with a half-written file.
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(encoded + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return _read_key_file(path)


def key_encryption_key(settings: Settings) -> KeyEncryptionKey:
    """The configured KEK; in development, the checkout's own; otherwise a clear refusal."""
    if settings.key_encryption_key is not None:
        encoded = settings.key_encryption_key.get_secret_value()
        return KeyEncryptionKey(decode_key_encryption_key(encoded))
    if settings.key_encryption_key_file is not None:
        return _read_key_file(settings.key_encryption_key_file)
    if settings.env == "development":
        return _development_key()
    raise KeyEncryptionKeyMissing(
        "no key-encryption key: set NEGLECT_KEY_ENCRYPTION_KEY to 32 random bytes in base64 "
        "(`openssl rand -base64 32`) or NEGLECT_KEY_ENCRYPTION_KEY_FILE to a file holding them. "
        "The signing keys in the database are encrypted with it; only NEGLECT_ENV=development "
        "may run without one."
    )
