"""Tests for LockLink session crypto."""

from __future__ import annotations

import hmac
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from drivers.locklink.frame import FLAG_RESP, FLAG_SEC, Frame, cobs_decode, decode, encode
from drivers.locklink.session import SecureChannel, SessionError, lock_proof, session_key

K = bytes(range(16))
NG = bytes(range(16, 32))
NL = bytes(range(32, 48))


def _pair() -> tuple[SecureChannel, SecureChannel]:
    ks = session_key(K, NG, NL)
    return SecureChannel(ks, NG, side="gateway"), SecureChannel(ks, NG, side="lock")


def test_proof_and_key_derivation() -> None:
    assert lock_proof(K, NG, NL) == hmac.new(K, b"LL1/lock" + NG + NL, "sha256").digest()[:16]
    assert session_key(K, NG, NL) == hmac.new(K, b"LL1/session" + NG + NL, "sha256").digest()[:16]
    assert len(lock_proof(K, NG, NL)) == 16
    assert lock_proof(K, NG, NL) != session_key(K, NG, NL)
    assert lock_proof(bytes(16), NG, NL) != lock_proof(K, NG, NL)
    with pytest.raises(SessionError):
        lock_proof(K[:15], NG, NL)


def test_seal_open_roundtrip_and_counters() -> None:
    gw, lock = _pair()
    req = Frame(addr=5, flags=0, seq=77, op=0x10, ctr=0, body=b"hello lock")
    s1 = gw.seal(req)
    assert s1.is_secure and s1.ctr == 1 and s1.body != req.body and len(s1.body) == 10 + 8
    # survives the wire
    s1 = decode(cobs_decode(encode(s1)[:-1]))
    opened = lock.open(s1)
    assert opened is not None and opened.body == b"hello lock" and opened.seq == 77
    assert gw.seal(req).ctr == 2
    resp = lock.seal(Frame(5, FLAG_RESP, 77, 0x10, 0, b"\x00"))
    assert resp.ctr == 1 and resp.flags == FLAG_RESP | FLAG_SEC
    back = gw.open(resp)
    assert back is not None and back.body == b"\x00"


def test_known_answer() -> None:
    """Fixed vectors so independent implementations (simulator, firmware) can cross-check."""
    assert lock_proof(K, NG, NL).hex() == "1577249579a5768abc882c57bfe1795c"
    assert session_key(K, NG, NL).hex() == "2314b997acf64294034be0169282d5aa"
    gw, _ = _pair()
    sealed = gw.seal(Frame(0, 0, 1, 0x12, 0, b"\x00\x05"))
    # header: ver 1, addr 0, flags SEC, seq 1, op 0x12, ctr 1
    assert sealed.header().hex() == "01000200011200000001"
    assert sealed.body.hex() == "c0affd4f0cff4ea70d16"
    # the same bytes straight from AES-CCM with the spec's nonce layout dir | Ng[0:8] | ctr
    nonce = b"\x47" + NG[:8] + (1).to_bytes(4, "big")
    ccm = AESCCM(session_key(K, NG, NL), tag_length=8)
    assert ccm.encrypt(nonce, b"\x00\x05", sealed.header()) == sealed.body


def test_tampered_rejected() -> None:
    gw, lock = _pair()
    s = gw.seal(Frame(0, 0, 1, 0x11, 0, b"\x00\x01"))
    bad_tag = replace(s, body=s.body[:-1] + bytes([s.body[-1] ^ 1]))
    assert lock.open(bad_tag) is None
    assert lock.open(replace(s, seq=2)) is None  # header is AAD
    assert lock.open(replace(s, op=0x12)) is None
    assert lock.open(replace(s, body=s.body[:4])) is None  # shorter than a tag
    assert lock.open(s) is not None  # failures did not advance the counter


def test_replay_and_older_ctr_rejected() -> None:
    gw, lock = _pair()
    a = gw.seal(Frame(0, 0, 1, 0x11, 0, b"a"))
    b = gw.seal(Frame(0, 0, 2, 0x11, 0, b"b"))
    assert lock.open(b) is not None
    assert lock.open(b) is None  # replay
    assert lock.open(a) is None  # older
    c = gw.seal(Frame(0, 0, 3, 0x11, 0, b"c"))
    assert lock.open(c) is not None


def test_wrong_direction_and_clear_rejected() -> None:
    gw, lock = _pair()
    s = gw.seal(Frame(0, 0, 1, 0x11, 0, b"x"))
    assert gw.open(s) is None  # a gateway frame reflected back to the gateway
    other_gw = SecureChannel(session_key(K, NG, NL), NG, side="gateway")
    assert other_gw.open(s) is None
    assert lock.open(Frame(0, 0, 1, 0x11, 0, b"x")) is None  # SEC not set
    wrong_key = SecureChannel(session_key(K, NG, bytes(16)), NG, side="lock")
    assert wrong_key.open(s) is None
