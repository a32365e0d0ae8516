"""LockLink/1 session crypto (spec section 2): lock proof, session key, AES-CCM sealing."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from drivers.locklink.frame import FLAG_SEC, Frame

KEY_LEN = 16  # lock key K and session key Ks
NONCE_LEN = 16  # Ng and Nl
PROOF_LEN = 16
TAG_LEN = 8
CTR_MAX = 0xFFFFFFFF  # u32 counter field
DIR_GATEWAY = 0x47  # 'G': gateway -> lock
DIR_LOCK = 0x4C  # 'L': lock -> gateway


class SessionError(ValueError):
    """Bad key/nonce length or exhausted counter."""


def _mac(key: bytes, label: bytes, ng: bytes, nl: bytes) -> bytes:
    if len(key) != KEY_LEN or len(ng) != NONCE_LEN or len(nl) != NONCE_LEN:
        raise SessionError("key and nonces must be 16 bytes")
    return hmac.new(key, label + ng + nl, hashlib.sha256).digest()[:16]


def lock_proof(key: bytes, ng: bytes, nl: bytes) -> bytes:
    """HMAC-SHA256(K, "LL1/lock" ‖ Ng ‖ Nl)[0:16]."""
    return _mac(key, b"LL1/lock", ng, nl)


def session_key(key: bytes, ng: bytes, nl: bytes) -> bytes:
    """HMAC-SHA256(K, "LL1/session" ‖ Ng ‖ Nl)[0:16]."""
    return _mac(key, b"LL1/session", ng, nl)


class SecureChannel:
    """One side of a session: seals outgoing frames, opens and replay-checks incoming ones."""

    def __init__(self, ks: bytes, ng: bytes, *, side: Literal["gateway", "lock"]) -> None:
        if len(ks) != KEY_LEN or len(ng) != NONCE_LEN:
            raise SessionError("session key and Ng must be 16 bytes")
        self._aead = AESCCM(ks, tag_length=TAG_LEN)
        self._salt = ng[:8]
        self._tx_dir = DIR_GATEWAY if side == "gateway" else DIR_LOCK
        self._rx_dir = DIR_LOCK if side == "gateway" else DIR_GATEWAY
        self.tx_ctr = 0  # last counter sent
        self.rx_ctr = 0  # last counter accepted

    def _nonce(self, direction: int, ctr: int) -> bytes:
        # nonce (13 bytes) = dir u8 ‖ Ng[0:8] ‖ ctr u32
        return bytes([direction]) + self._salt + ctr.to_bytes(4, "big")

    def seal(self, frame: Frame) -> Frame:
        """Return `frame` with SEC set, this side's next ctr and the body encrypted + tagged."""
        if self.tx_ctr >= CTR_MAX:
            raise SessionError("counter exhausted; start a new session")
        self.tx_ctr += 1
        out = replace(frame, flags=frame.flags | FLAG_SEC, ctr=self.tx_ctr, body=b"")
        ct = self._aead.encrypt(self._nonce(self._tx_dir, out.ctr), frame.body, out.header())
        return replace(out, body=ct)

    def open(self, frame: Frame) -> Frame | None:
        """Return `frame` with its plaintext body, or None (not SEC, replayed ctr, bad tag)."""
        if not frame.is_secure or frame.ctr <= self.rx_ctr or len(frame.body) < TAG_LEN:
            return None
        try:
            nonce = self._nonce(self._rx_dir, frame.ctr)
            pt = self._aead.decrypt(nonce, frame.body, frame.header())
        except InvalidTag:
            return None
        self.rx_ctr = frame.ctr
        return replace(frame, body=pt)
