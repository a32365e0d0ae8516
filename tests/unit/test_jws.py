"""Unit tests for gateway.jws: Ed25519 compact JWS verification of signed jobs."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from gateway.jws import (
    MAX_HEADER_CHARS,
    JobVerifier,
    SignatureError,
    b64url_decode,
    b64url_encode,
    encode_public_key,
    sign_job,
)

ENVELOPE = {
    "v": 1,
    "job_id": "j-1",
    "type": "gateway.republish",
    "issued_at": "2026-12-04T19:00:00Z",
    "body": {},
}

PORTAL = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def b64(obj: object) -> str:
    """Unpadded base64url of compact JSON (or raw bytes)."""
    raw = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    return b64url_encode(raw)


def compact(header: object, payload: object, key: Ed25519PrivateKey = PORTAL) -> bytes:
    """A compact JWS with an arbitrary protected header, signed with `key`."""
    signing_input = f"{b64(header)}.{b64(payload)}".encode()
    return signing_input + b"." + b64url_encode(key.sign(signing_input)).encode()


@pytest.fixture
def verifier() -> JobVerifier:
    return JobVerifier({"portal-1": encode_public_key(PORTAL.public_key())})


def expect(verifier: JobVerifier, payload: bytes, code: str) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        verifier.verify(payload)
    assert info.value.code == code
    assert info.value.message
    assert str(info.value).startswith(code)
    return info.value


# --------------------------------------------------------------------------- valid signatures


def test_sign_and_verify_roundtrip(verifier: JobVerifier) -> None:
    token = sign_job(ENVELOPE, PORTAL, "portal-1")
    assert token.count(b".") == 2
    assert json.loads(verifier.verify(token)) == ENVELOPE


def test_sign_bytes_payload_is_returned_verbatim(verifier: JobVerifier) -> None:
    raw = b'{"v": 1,  "odd spacing": true}'
    assert verifier.verify(sign_job(raw, PORTAL, "portal-1")) == raw


def test_header_is_eddsa_with_kid() -> None:
    header_b64 = sign_job(ENVELOPE, PORTAL, "portal-1").split(b".")[0].decode()
    assert json.loads(b64url_decode(header_b64)) == {"alg": "EdDSA", "kid": "portal-1"}


def test_key_rotation_two_kids() -> None:
    v = JobVerifier(
        {
            "old": encode_public_key(OTHER.public_key()),
            "new": encode_public_key(PORTAL.public_key()),
        }
    )
    assert v.kids == frozenset({"old", "new"})
    assert v.verify(sign_job(ENVELOPE, OTHER, "old"))
    assert v.verify(sign_job(ENVELOPE, PORTAL, "new"))
    expect(v, sign_job(ENVELOPE, PORTAL, "old"), "signature_invalid")


def test_extra_header_parameters_are_allowed(verifier: JobVerifier) -> None:
    token = compact({"alg": "EdDSA", "kid": "portal-1", "typ": "JOSE"}, ENVELOPE)
    assert json.loads(verifier.verify(token)) == ENVELOPE


# --------------------------------------------------------------------------- tampering


def test_tampered_payload(verifier: JobVerifier) -> None:
    h, _, s = sign_job(ENVELOPE, PORTAL, "portal-1").split(b".")
    forged = b64({**ENVELOPE, "type": "key.revoke"}).encode()
    expect(verifier, b".".join([h, forged, s]), "signature_invalid")


def test_tampered_header(verifier: JobVerifier) -> None:
    _, p, s = sign_job(ENVELOPE, PORTAL, "portal-1").split(b".")
    header = b64({"alg": "EdDSA", "kid": "portal-1", "typ": "x"}).encode()
    expect(verifier, b".".join([header, p, s]), "signature_invalid")


def test_tampered_signature(verifier: JobVerifier) -> None:
    h, p, s = sign_job(ENVELOPE, PORTAL, "portal-1").split(b".")
    sig = bytearray(b64url_decode(s.decode()))
    sig[0] ^= 1
    expect(verifier, b".".join([h, p, b64url_encode(bytes(sig)).encode()]), "signature_invalid")


def test_signed_by_another_key_with_known_kid(verifier: JobVerifier) -> None:
    expect(verifier, sign_job(ENVELOPE, OTHER, "portal-1"), "signature_invalid")


@pytest.mark.parametrize("cut", [1, 2, 40, 86])
def test_truncated_signature(verifier: JobVerifier, cut: int) -> None:
    token = sign_job(ENVELOPE, PORTAL, "portal-1")
    expect(verifier, token[:-cut], "signature_invalid")


def test_non_canonical_signature_encoding(verifier: JobVerifier) -> None:
    h, p, s = sign_job(ENVELOPE, PORTAL, "portal-1").split(b".")
    # 64 bytes → 86 chars; the last char carries 4 padding bits that must be zero.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(s.decode()[-1])
    bumped = s[:-1] + alphabet[last ^ 1].encode()
    assert base64.urlsafe_b64decode(bumped + b"==") == base64.urlsafe_b64decode(s + b"==")
    expect(verifier, b".".join([h, p, bumped]), "signature_invalid")


# --------------------------------------------------------------------------- algorithms and kids


def test_alg_none_is_rejected(verifier: JobVerifier) -> None:
    token = f"{b64({'alg': 'none', 'kid': 'portal-1'})}.{b64(ENVELOPE)}.".encode()
    err = expect(verifier, token, "signature_invalid")
    assert "alg" in err.message


@pytest.mark.parametrize("alg", ["none", "None", "HS256", "RS256", "ES256", "eddsa", "Ed25519", ""])
def test_other_algs_are_rejected_even_with_a_valid_signature(verifier: JobVerifier, alg: str) -> None:
    expect(verifier, compact({"alg": alg, "kid": "portal-1"}, ENVELOPE), "signature_invalid")


@pytest.mark.parametrize("header", [{"kid": "portal-1"}, {"alg": None, "kid": "portal-1"}])
def test_missing_alg(verifier: JobVerifier, header: dict[str, object]) -> None:
    expect(verifier, compact(header, ENVELOPE), "signature_invalid")


def test_unknown_kid(verifier: JobVerifier) -> None:
    err = expect(verifier, sign_job(ENVELOPE, PORTAL, "portal-9"), "signature_invalid")
    assert "portal-9" in err.message


@pytest.mark.parametrize("kid", [None, 7, ["portal-1"]])
def test_missing_or_non_string_kid(verifier: JobVerifier, kid: object) -> None:
    header = {"alg": "EdDSA"} if kid is None else {"alg": "EdDSA", "kid": kid}
    expect(verifier, compact(header, ENVELOPE), "signature_invalid")


def test_crit_header_is_rejected(verifier: JobVerifier) -> None:
    header = {"alg": "EdDSA", "kid": "portal-1", "crit": ["b64"], "b64": False}
    expect(verifier, compact(header, ENVELOPE), "signature_invalid")


def test_unknown_kid_message_is_sanitised(verifier: JobVerifier) -> None:
    err = expect(
        verifier, compact({"alg": "EdDSA", "kid": "\n\x1b[31m" + "x" * 500}, ENVELOPE), "signature_invalid"
    )
    assert "\n" not in err.message and "\x1b" not in err.message
    assert len(err.message) < 200


# --------------------------------------------------------------------------- not a compact JWS


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps(ENVELOPE).encode(),
        b"",
        b"abc",
        b"abc.def",
        b"a.b.c.d",
        b"a.b.c.d.e",
        "é.b.c".encode(),
        b"\xff\xfe.a.b",
        b"eyJ=.eyJ.abc",  # padding is not allowed in compact serialization
        b'{"payload":"e30","protected":"e30","signature":"AA"}',  # JSON serialization
        b"a.b.c\n",
        b" a.b.c",
    ],
)
def test_unsigned_payloads_need_a_signature(verifier: JobVerifier, payload: bytes) -> None:
    expect(verifier, payload, "signature_required")


@pytest.mark.parametrize(
    "header_b64",
    [
        "",
        "A",  # impossible base64 length
        b64(b"not json"),
        b64(b"\xff\xfe"),
        b64([1, 2]),
        b64("EdDSA"),
        b64(b'{"alg":"EdDSA","alg":"EdDSA","kid":"portal-1"}'),  # duplicate member
        b64(b'{"alg":"EdDSA","kid":"portal-1"'),
    ],
)
def test_bad_protected_header(verifier: JobVerifier, header_b64: str) -> None:
    _, p, s = sign_job(ENVELOPE, PORTAL, "portal-1").split(b".")
    expect(verifier, b".".join([header_b64.encode(), p, s]), "signature_invalid")


def test_oversized_header(verifier: JobVerifier) -> None:
    header = {"alg": "EdDSA", "kid": "portal-1", "pad": "x" * MAX_HEADER_CHARS}
    err = expect(verifier, compact(header, ENVELOPE), "signature_invalid")
    assert "large" in err.message


def test_deeply_nested_header(verifier: JobVerifier) -> None:
    header = b64(b"[" * 3000 + b"]" * 3000)[:MAX_HEADER_CHARS]
    _, p, s = sign_job(ENVELOPE, PORTAL, "portal-1").split(b".")
    expect(verifier, b".".join([header.encode(), p, s]), "signature_invalid")


def test_messages_never_echo_the_payload(verifier: JobVerifier) -> None:
    secret_env = {**ENVELOPE, "body": {"code": "48291377"}}
    h, p, s = sign_job(secret_env, OTHER, "portal-1").split(b".")
    for token in (b".".join([h, p, s]), b".".join([b"", p, s]), b"x" + p):
        with pytest.raises(SignatureError) as info:
            verifier.verify(token)
        assert "48291377" not in str(info.value)
        assert p.decode()[:20] not in str(info.value)


# --------------------------------------------------------------------------- key configuration


def test_verifier_accepts_padded_keys() -> None:
    raw = PORTAL.public_key().public_bytes_raw()
    padded = base64.urlsafe_b64encode(raw).decode()
    assert padded.endswith("=")
    v = JobVerifier({"p": padded})
    assert v.verify(sign_job(ENVELOPE, PORTAL, "p"))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not base64!",
        b64url_encode(bytes(31)),
        b64url_encode(bytes(33)),
        base64.b64encode(bytes([0xFB] * 32)).decode(),  # standard alphabet, not base64url
        b64url_encode(bytes(32)) + "==",  # wrong padding
    ],
)
def test_verifier_rejects_malformed_keys_naming_the_kid(value: str) -> None:
    with pytest.raises(ValueError, match="lobby-kid"):
        JobVerifier({"good": encode_public_key(PORTAL.public_key()), "lobby-kid": value})


def test_verifier_needs_keys() -> None:
    with pytest.raises(ValueError, match="no job verification keys"):
        JobVerifier({})


@pytest.mark.parametrize("kid", ["", "k" * 129])
def test_verifier_rejects_bad_kids(kid: str) -> None:
    with pytest.raises(ValueError, match="key id"):
        JobVerifier({kid: encode_public_key(PORTAL.public_key())})


# --------------------------------------------------------------------------- base64url helpers


@given(st.binary(max_size=100))
def test_b64url_roundtrip(raw: bytes) -> None:
    text = b64url_encode(raw)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url_decode(text) == raw
    assert b64url_decode(base64.urlsafe_b64encode(raw).decode(), padding=True) == raw


@pytest.mark.parametrize("text", ["A", "AB=", "AB==", "+/8", "AB C", "AAB=", "AF"])
def test_b64url_decode_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


def test_b64url_decode_padding_must_be_exact() -> None:
    assert b64url_decode("AA==", padding=True) == b"\x00"
    assert b64url_decode("AA", padding=True) == b"\x00"
    for bad in ("AA=", "AA===", "AAA==", "A==="):
        with pytest.raises(ValueError):
            b64url_decode(bad, padding=True)


# --------------------------------------------------------------------------- fuzzing


@given(st.binary(max_size=600))
def test_verify_arbitrary_bytes_only_raises_signature_error(data: bytes) -> None:
    v = JobVerifier({"portal-1": encode_public_key(PORTAL.public_key())})
    with pytest.raises(SignatureError):
        v.verify(data)


_B64_CHARS = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=120
)


@given(_B64_CHARS, _B64_CHARS, _B64_CHARS)
def test_verify_arbitrary_compact_shapes(h: str, p: str, s: str) -> None:
    v = JobVerifier({"portal-1": encode_public_key(PORTAL.public_key())})
    with pytest.raises(SignatureError) as info:
        v.verify(f"{h}.{p}.{s}".encode())
    assert info.value.code == "signature_invalid"


@given(st.dictionaries(st.text(max_size=8), st.none() | st.integers() | st.text(max_size=8)))
def test_verify_arbitrary_headers(header: dict[str, object]) -> None:
    v = JobVerifier({"portal-1": encode_public_key(PORTAL.public_key())})
    token = compact(header, ENVELOPE)
    ok = header.get("alg") == "EdDSA" and header.get("kid") == "portal-1" and "crit" not in header
    if ok:
        assert json.loads(v.verify(token)) == ENVELOPE
    else:
        with pytest.raises(SignatureError):
            v.verify(token)
