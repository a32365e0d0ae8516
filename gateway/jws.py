"""Ed25519 JWS (RFC 7515 compact serialization, RFC 8037 EdDSA) verification of signed jobs."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "MAX_HEADER_CHARS",
    "MAX_KID_CHARS",
    "JobVerifier",
    "SignatureError",
    "b64url_decode",
    "b64url_encode",
    "encode_public_key",
    "sign_job",
]

MAX_HEADER_CHARS = 4096  # base64url characters of the protected header
MAX_KID_CHARS = 128
_SIG_CHARS = 86  # 64-byte Ed25519 signature, unpadded base64url
_COMPACT = re.compile(rb"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")

SignatureCode = Literal["signature_required", "signature_invalid"]


class SignatureError(Exception):
    """A payload is not a JWS (`signature_required`) or does not verify (`signature_invalid`)."""

    def __init__(self, code: SignatureCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: SignatureCode = code
        self.message = message


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, padding: bool = False) -> bytes:
    """Decode canonical base64url (padding only if allowed); raise ValueError otherwise."""
    if padding and text.endswith("="):
        unpadded = text.rstrip("=")
        if text != unpadded + "=" * (-len(unpadded) % 4):
            raise ValueError("wrong base64 padding")
        text = unpadded
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if b64url_encode(raw) != text:  # non-zero trailing bits: not the canonical encoding
        raise ValueError("not canonical base64url")
    return raw


def encode_public_key(key: Ed25519PublicKey) -> str:
    """The unpadded base64url form of a raw Ed25519 public key, as used in `[security] job_keys`."""
    return b64url_encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member name")
    return out


def _show(value: object) -> str:
    """A short, printable rendering of an untrusted value for an error message."""
    text = repr(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 64 else text[:63] + "…"


class JobVerifier:
    """Verifies compact EdDSA JWS job payloads against the configured portal keys (kid → key)."""

    def __init__(self, keys: dict[str, str]) -> None:
        """Load the keys; raise ValueError naming the kid of any malformed one."""
        if not keys:
            raise ValueError("no job verification keys given (use no verifier for unsigned jobs)")
        self._keys: dict[str, Ed25519PublicKey] = {}
        for kid, text in keys.items():
            if not isinstance(kid, str) or not 1 <= len(kid) <= MAX_KID_CHARS:
                raise ValueError(f"job key id {_show(kid)}: must be 1-{MAX_KID_CHARS} characters")
            try:
                raw = b64url_decode(text.strip(), padding=True) if isinstance(text, str) else b""
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise ValueError(f"job key {kid!r}: must be the base64url encoding of a 32-byte Ed25519 key")
            self._keys[kid] = Ed25519PublicKey.from_public_bytes(raw)

    @property
    def kids(self) -> frozenset[str]:
        """The configured key ids."""
        return frozenset(self._keys)

    def verify(self, payload: bytes) -> bytes:
        """Return the verified JWS payload bytes; raise SignatureError otherwise."""
        if not _COMPACT.fullmatch(payload):
            raise SignatureError(
                "signature_required", "payload is not a JWS compact serialization (signed job)"
            )
        header_b64, payload_b64, sig_b64 = payload.decode("ascii").split(".")
        if len(header_b64) > MAX_HEADER_CHARS:
            raise SignatureError("signature_invalid", "JWS protected header is too large")
        try:
            header_raw = b64url_decode(header_b64)
            header = json.loads(header_raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
        except (ValueError, RecursionError):
            raise SignatureError("signature_invalid", "JWS protected header is not valid") from None
        if not isinstance(header, dict):
            raise SignatureError("signature_invalid", "JWS protected header is not a JSON object")
        alg = header.get("alg")
        if alg != "EdDSA":
            raise SignatureError("signature_invalid", f"JWS alg {_show(alg)} is not allowed")
        if "crit" in header:
            raise SignatureError("signature_invalid", "JWS critical header parameters unsupported")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise SignatureError("signature_invalid", "JWS header has no kid")
        key = self._keys.get(kid)
        if key is None:
            raise SignatureError("signature_invalid", f"JWS kid {_show(kid)} is not a known key")
        if len(sig_b64) != _SIG_CHARS:
            raise SignatureError("signature_invalid", "JWS signature has the wrong length")
        try:
            signature = b64url_decode(sig_b64)
            body = b64url_decode(payload_b64)
        except ValueError:
            raise SignatureError("signature_invalid", "JWS part is not canonical base64url") from None
        try:
            key.verify(signature, f"{header_b64}.{payload_b64}".encode("ascii"))
        except InvalidSignature:
            raise SignatureError(
                "signature_invalid", f"JWS signature does not verify (kid {kid!r})"
            ) from None
        return body


def sign_job(envelope: dict[str, Any] | bytes, private_key: Ed25519PrivateKey, kid: str) -> bytes:
    """Sign a job envelope as the portal does: compact JWS, alg EdDSA, the given kid."""
    body = (
        envelope
        if isinstance(envelope, bytes)
        else json.dumps(envelope, separators=(",", ":")).encode("utf-8")
    )
    header = json.dumps({"alg": "EdDSA", "kid": kid}, separators=(",", ":")).encode("utf-8")
    signing_input = f"{b64url_encode(header)}.{b64url_encode(body)}".encode("ascii")
    return signing_input + b"." + b64url_encode(private_key.sign(signing_input)).encode("ascii")
