"""At-rest encryption of credential material (AES-256-GCM) with a key from a file or systemd credential."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_LEN = 32
NONCE_LEN = 12
CREDENTIAL_NAME = "lockgw-secret"  # systemd LoadCredential= name


class SecretKeyError(Exception):
    """The at-rest key cannot be read or created, or a stored blob does not decrypt."""


def resolve_key_path(configured: Path | None, state_dir: Path) -> Path:
    """Where the key lives: configured path, else the systemd credential, else state_dir/secret.key."""
    if configured is not None:
        return configured
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / CREDENTIAL_NAME).exists():
        return Path(creds) / CREDENTIAL_NAME
    return state_dir / "secret.key"


def load_or_create_key(path: Path) -> bytes:
    """Read the 32-byte key (raw or hex); create it with mode 0600 if absent."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = AESGCM.generate_key(bit_length=256)
        # O_EXCL: never overwrite a key another process just created.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_key(path)
        except OSError as exc:
            raise SecretKeyError(f"{path}: cannot create secret key: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.hex().encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return key
    except OSError as exc:
        raise SecretKeyError(f"{path}: cannot read secret key: {exc.strerror}") from None
    text = data.strip()
    if len(text) == 2 * KEY_LEN:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            pass
    if len(data) == KEY_LEN:
        return data
    raise SecretKeyError(f"{path}: secret key must be {KEY_LEN} bytes or {2 * KEY_LEN} hex characters")


class SecretBox:
    """Seals and opens small blobs; the associated data binds a blob to its row."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_LEN:
            raise SecretKeyError("secret key must be 32 bytes")
        self._aead = AESGCM(key)
        self._ref_key = hashlib.sha256(b"lockgw/ref\0" + key).digest()

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """nonce(12) || ciphertext+tag(16)."""
        nonce = os.urandom(NONCE_LEN)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Inverse of seal; raises SecretKeyError when the blob was not sealed with this key."""
        try:
            return self._aead.decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], aad)
        except (InvalidTag, ValueError):
            raise SecretKeyError("stored credential does not decrypt (wrong secret key?)") from None

    def fingerprint(self, secret: bytes) -> bytes:
        """What the slot map stores to recognise a secret: keyed, so a stolen database yields no PINs.

        The lock reports SHA-256(secret)[0:8]; stored as is, a 4 to 8 digit PIN would fall to brute
        force. The HMAC of that digest under the at-rest key compares just as well.
        """
        digest = hashlib.sha256(secret).digest()[:8]
        return self.fingerprint_digest(digest)

    def fingerprint_digest(self, digest: bytes) -> bytes:
        """fingerprint() from the 8-byte digest a lock reports."""
        return hmac.new(self._ref_key, b"fp\0" + digest, hashlib.sha256).digest()[:16]

    def credential_ref(self, key_id: str, cred: str) -> bytes:
        """The 16-byte opaque LockLink `ref` for a key's credential: stable, unlinkable without the key."""
        msg = key_id.encode() + b"\0" + cred.encode()
        return hmac.new(self._ref_key, msg, hashlib.sha256).digest()[:16]
