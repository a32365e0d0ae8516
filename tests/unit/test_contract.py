"""Unit tests for gateway.contract: job envelope parsing, body models, secrets and ack payloads."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.contract import (
    BODY_MODELS,
    PENDING_MESSAGE,
    DoorCode,
    Empty,
    Job,
    JobType,
    KeyRevoke,
    KeyUpsert,
    LockTarget,
    PolicyUpdate,
    RejectCode,
    Rejection,
    ReservationUpsert,
    SiteSync,
    SmartKey,
    ack_payload,
    parse_job,
    parse_rfc3339,
    rfc3339,
)
from gateway.jws import JobVerifier, b64url_decode, b64url_encode, encode_public_key, sign_job

NOW = datetime(2026, 12, 4, 19, 0, tzinfo=UTC)
MAX_AGE = timedelta(days=7)
MAX_FUTURE = timedelta(minutes=5)
MAX_BYTES = 8 * 1024 * 1024

PIN = "482913"
PK_RAW = bytes(range(100, 132))
PK = b64url_encode(PK_RAW)  # 43 chars, unpadded
PORTAL = Ed25519PrivateKey.from_private_bytes(bytes(32))
VERIFIER = JobVerifier({"portal-1": encode_public_key(PORTAL.public_key())})

KEY_BODY: dict[str, Any] = {
    "key_id": "k-1042",
    "version": 7,
    "label": "Room 101 guest",
    "doors": ["101", "pool", "gym"],
    "credentials": [
        {"type": "door_code", "code": PIN},
        {"type": "smartkey", "credential_id": "sk-77", "public_key": PK},
    ],
    "valid_from": "2026-12-05T15:00:00Z",
    "valid_until": "2026-12-08T11:00:00Z",
    "allow_provisioning": True,
    "reservation_id": "R-889",
}
RESERVATION_BODY: dict[str, Any] = {
    "reservation_id": "R-889",
    "version": 3,
    "status": "checked_in",
    "channel": "online",
}
POLICY_BODY: dict[str, Any] = {
    "version": 2,
    "require_checkin_before_provisioning": True,
    "revoke_on_checkout": True,
}
BODIES: dict[str, dict[str, Any]] = {
    "key.upsert": KEY_BODY,
    "key.revoke": {"key_id": "k-1042", "version": 8},
    "reservation.upsert": RESERVATION_BODY,
    "policy.update": POLICY_BODY,
    "site.sync": {
        "revision": 118,
        "policy": POLICY_BODY,
        "reservations": [RESERVATION_BODY],
        "keys": [KEY_BODY],
    },
    "lock.reconcile": {"lock_id": "lock-101"},
    "lock.sync_time": {},
    "gateway.republish": {},
}
BODY_CLASSES: dict[str, type[Any]] = {
    "key.upsert": KeyUpsert,
    "key.revoke": KeyRevoke,
    "reservation.upsert": ReservationUpsert,
    "policy.update": PolicyUpdate,
    "site.sync": SiteSync,
    "lock.reconcile": LockTarget,
    "lock.sync_time": LockTarget,
    "gateway.republish": Empty,
}


def envelope(job_type: str = "key.upsert", body: Any = None, **fields: Any) -> dict[str, Any]:
    """A valid job envelope (deep-copied), with overrides."""
    env: dict[str, Any] = {
        "v": 1,
        "job_id": "0b7c-1",
        "type": job_type,
        "issued_at": "2026-12-04T19:00:00Z",
        "body": copy.deepcopy(BODIES[job_type] if body is None else body),
    }
    env.update(fields)
    return env


def encode(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def parse(payload: bytes, **overrides: Any) -> Job:
    kwargs: dict[str, Any] = {
        "max_bytes": MAX_BYTES,
        "verifier": None,
        "now": NOW,
        "max_age": MAX_AGE,
        "max_future": MAX_FUTURE,
    }
    kwargs.update(overrides)
    return parse_job(payload, **kwargs)


def rejected(payload: bytes, code: RejectCode, job_id: str | None = "0b7c-1", **overrides: Any) -> Rejection:
    """Assert the payload is rejected with `code`, the given job_id and the payload hash."""
    with pytest.raises(Rejection) as info:
        parse(payload, **overrides)
    rej = info.value
    assert rej.code == code, rej
    assert rej.job_id == job_id, rej
    assert rej.payload_sha256 == hashlib.sha256(payload).hexdigest()
    assert rej.message
    return rej


def body_rejected(job_type: str, body: Any, *fragments: str) -> Rejection:
    """Assert `body` is schema_invalid for `job_type` and the message names each fragment."""
    rej = rejected(encode(envelope(job_type, body)), RejectCode.SCHEMA_INVALID)
    for fragment in fragments:
        assert fragment in rej.message, rej.message
    return rej


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out.update(changes)
    return out


def without(base: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in base.items() if k not in names}


# =========================================================================== enums and constants


def test_reject_codes_are_the_contract_values() -> None:
    assert {c.value for c in RejectCode} == {
        "malformed",
        "schema_invalid",
        "unsupported_version",
        "unknown_type",
        "too_large",
        "signature_required",
        "signature_invalid",
        "expired",
    }


def test_job_types_are_the_contract_values() -> None:
    assert [t.value for t in JobType] == list(BODIES)
    assert set(BODY_MODELS) == set(JobType)


def test_pending_message_is_the_portal_tooltip() -> None:
    assert PENDING_MESSAGE == (
        "The credentials haven't been assigned to the door yet. This can occur if provisioning "
        "was manually disabled or if, based on your configuration settings, the linked PMS "
        "reservation hasn't been checked in (either at the front desk or online)."
    )


# =========================================================================== valid jobs


@pytest.mark.parametrize("job_type", list(BODIES))
def test_every_job_type_parses(job_type: str) -> None:
    payload = encode(envelope(job_type))
    job = parse(payload)
    assert job.job_id == "0b7c-1"
    assert job.type is JobType(job_type)
    assert isinstance(job.body, BODY_CLASSES[job_type])
    assert job.issued_at == NOW and job.issued_at.tzinfo is UTC
    assert job.payload_sha256 == hashlib.sha256(payload).hexdigest()


def test_spec_key_upsert_example_fields() -> None:
    body = parse(encode(envelope())).body
    assert isinstance(body, KeyUpsert)
    assert body.key_id == "k-1042" and body.version == 7 and body.label == "Room 101 guest"
    assert body.doors == ["101", "pool", "gym"]
    assert body.valid_from == datetime(2026, 12, 5, 15, tzinfo=UTC)
    assert body.valid_until == datetime(2026, 12, 8, 11, tzinfo=UTC)
    assert body.allow_provisioning is True and body.reservation_id == "R-889"
    assert body.door_code is not None and body.door_code.secret_bytes() == PIN.encode()
    assert body.smartkey is not None and body.smartkey.credential_id == "sk-77"
    assert body.smartkey.public_key_bytes == PK_RAW == body.smartkey.secret_bytes()


def test_job_is_frozen() -> None:
    job = parse(encode(envelope()))
    with pytest.raises(AttributeError):
        job.job_id = "x"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        job.body.version = 9  # type: ignore[union-attr]


def test_staff_key_without_reservation_window_or_credentials() -> None:
    body = with_(
        without(KEY_BODY, "label", "reservation_id"),
        valid_from=None,
        valid_until=None,
        credentials=[],
        doors=[],
    )
    key = parse(encode(envelope(body=body))).body
    assert isinstance(key, KeyUpsert)
    assert key.label is None and key.reservation_id is None
    assert key.valid_from is None and key.valid_until is None
    assert key.door_code is None and key.smartkey is None


@pytest.mark.parametrize(
    "window",
    [
        {"valid_from": None, "valid_until": "2026-12-08T11:00:00Z"},
        {"valid_from": "2026-12-05T15:00:00Z", "valid_until": None},
    ],
)
def test_half_open_windows(window: dict[str, Any]) -> None:
    assert parse(encode(envelope(body=with_(KEY_BODY, **window))))


def test_single_credential_keys() -> None:
    for cred in KEY_BODY["credentials"]:
        assert parse(encode(envelope(body=with_(KEY_BODY, credentials=[cred]))))


def test_site_sync_defaults() -> None:
    body = parse(encode(envelope("site.sync", {"revision": 0}))).body
    assert isinstance(body, SiteSync)
    assert body.policy is None and body.reservations == [] and body.keys == []


def test_site_sync_nested_objects() -> None:
    body = parse(encode(envelope("site.sync"))).body
    assert isinstance(body, SiteSync) and isinstance(body.policy, PolicyUpdate)
    assert body.reservations[0].status == "checked_in"
    assert body.keys[0].door_code is not None


@pytest.mark.parametrize("job_type", ["lock.reconcile", "lock.sync_time"])
@pytest.mark.parametrize("body", [{}, {"lock_id": None}, {"lock_id": "lock-7"}])
def test_lock_target(job_type: str, body: dict[str, Any]) -> None:
    target = parse(encode(envelope(job_type, body))).body
    assert isinstance(target, LockTarget) and target.lock_id == body.get("lock_id")


@pytest.mark.parametrize("status", ["booked", "checked_in", "checked_out", "cancelled"])
@pytest.mark.parametrize("channel", ["front_desk", "online", None, "absent"])
def test_reservation_statuses_and_channels(status: str, channel: str | None) -> None:
    body = with_(RESERVATION_BODY, status=status, channel=channel)
    if channel == "absent":
        del body["channel"]
    res = parse(encode(envelope("reservation.upsert", body))).body
    assert isinstance(res, ReservationUpsert)
    assert res.status == status and res.channel == (None if channel == "absent" else channel)


def test_limits_accept_the_maximum() -> None:
    body = with_(
        KEY_BODY,
        key_id="k" * 128,
        version=2**63 - 1,
        doors=[f"d{i}" for i in range(256)],
        label="x" * 1024,
        credentials=[{"type": "door_code", "code": "0" * 16}],
    )
    assert parse(encode(envelope(body=body, job_id="j" * 128))).job_id == "j" * 128
    assert parse(encode(envelope(body=with_(KEY_BODY, version=0))))
    assert parse(
        encode(envelope(body=with_(KEY_BODY, credentials=[{**KEY_BODY["credentials"][0], "code": "0000"}])))
    )


def test_unicode_ids_are_allowed() -> None:
    body = with_(KEY_BODY, key_id="clé-ü", doors=["Zimmer 101", "piscine é"])
    assert parse(encode(envelope(body=body)))


def test_exact_size_limit_is_accepted() -> None:
    payload = encode(envelope())
    assert parse(payload, max_bytes=len(payload))


# =========================================================================== rejection codes


def test_too_large() -> None:
    payload = encode(envelope())
    rej = rejected(payload, RejectCode.TOO_LARGE, None, max_bytes=len(payload) - 1)
    assert str(len(payload)) in rej.message


def test_too_large_is_checked_before_the_signature() -> None:
    payload = sign_job(envelope(), PORTAL, "portal-1")
    rejected(payload, RejectCode.TOO_LARGE, None, max_bytes=10, verifier=VERIFIER)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xfe{}",
        b'{"v": 1, "job_id": "\xc3\x28"}',  # invalid UTF-8 inside a string
        b"{",
        b"not json",
        b"{'v': 1}",
        b'{"v": 1,}',
        b"\xef\xbb\xbf{}",  # UTF-8 BOM
        b"[]",
        b'["v", 1]',
        b'"job"',
        b"1",
        b"null",
        b"true",
        b'{"v": 1, "v": 1}',  # duplicate member names
        b'{"v": 1, "body": {"a": 1, "a": 2}}',
        b'{"v": NaN}',
        b'{"v": Infinity}',
        b'{"v": -Infinity}',
        b'{"v": 1, "job_id": "\\ud800"}',  # lone surrogate escape
        b'{"v": 1, "\\udfff": 1}',
        b'{"v": 1, "body": {"doors": ["\\udc00"]}}',
        b'{"v": 1' + b"1" * 5000 + b"}",  # over-long integer
        b"[" * 100_000 + b"]" * 100_000,
        b'{"v": 1}{"v": 1}',
        b'{"v": 1, "job_id": "a\x01b"}',  # raw control character inside a string
    ],
)
def test_malformed(payload: bytes) -> None:
    rej = rejected(payload, RejectCode.MALFORMED, None)
    assert len(rej.message) <= 1000


def test_malformed_json_message_has_a_position() -> None:
    rej = rejected(b'{"v": 1,\n "x": }', RejectCode.MALFORMED, None)
    assert "line 2" in rej.message


@pytest.mark.parametrize("v", [0, 2, -1, 10**30])
def test_unsupported_version(v: int) -> None:
    rej = rejected(encode(envelope(v=v)), RejectCode.UNSUPPORTED_VERSION)
    assert rej.message.startswith("v:")


def test_missing_version() -> None:
    rejected(encode(without(envelope(), "v")), RejectCode.UNSUPPORTED_VERSION)
    rejected(encode({"hello": "world"}), RejectCode.UNSUPPORTED_VERSION, None)


@pytest.mark.parametrize("v", ["1", 1.0, True, False, None, [1], {"major": 1}])
def test_non_integer_version_is_schema_invalid(v: Any) -> None:
    rej = rejected(encode(envelope(v=v)), RejectCode.SCHEMA_INVALID)
    assert rej.message.startswith("v:")


def test_version_is_checked_before_type_and_body() -> None:
    rejected(encode(envelope(v=2, type="future.type", body=[])), RejectCode.UNSUPPORTED_VERSION)


@pytest.mark.parametrize("job_id", ["", "j" * 129, 7, None, True, ["a"], "a\nb", "a\x00b", "a\x85"])
def test_unreadable_job_id(job_id: Any) -> None:
    rej = rejected(encode(envelope(job_id=job_id)), RejectCode.SCHEMA_INVALID, None)
    assert rej.message.startswith("job_id:")


def test_missing_job_id() -> None:
    rej = rejected(encode(without(envelope(), "job_id")), RejectCode.SCHEMA_INVALID, None)
    assert rej.message == "job_id: field required"


def test_unreadable_job_id_with_bad_version_is_unsupported_version() -> None:
    rejected(encode(envelope(v=3, job_id=5)), RejectCode.UNSUPPORTED_VERSION, None)


@pytest.mark.parametrize("job_type", ["key.delete", "KEY.UPSERT", "key.upsert ", "", "lock"])
def test_unknown_type(job_type: str) -> None:
    env = envelope()
    env["type"] = job_type
    rej = rejected(encode(env), RejectCode.UNKNOWN_TYPE)
    assert rej.message.startswith("type:")


@pytest.mark.parametrize("job_type", [None, 1, ["key.upsert"], {"name": "key.upsert"}])
def test_non_string_type_is_schema_invalid(job_type: Any) -> None:
    env = envelope()
    env["type"] = job_type
    rejected(encode(env), RejectCode.SCHEMA_INVALID)


def test_missing_type() -> None:
    rej = rejected(encode(without(envelope(), "type")), RejectCode.SCHEMA_INVALID)
    assert rej.message == "type: field required"


def test_unknown_type_message_is_sanitised() -> None:
    env = envelope()
    env["type"] = "\x1b[2J" + "x" * 5000
    rej = rejected(encode(env), RejectCode.UNKNOWN_TYPE)
    assert "\x1b" not in rej.message and len(rej.message) < 200


@pytest.mark.parametrize("field", ["issued_at", "body"])
def test_envelope_fields_required(field: str) -> None:
    rej = rejected(encode(without(envelope(), field)), RejectCode.SCHEMA_INVALID)
    assert rej.message == f"{field}: field required"


def test_envelope_extra_field() -> None:
    rej = rejected(encode(envelope(priority=1)), RejectCode.SCHEMA_INVALID)
    assert rej.message == "priority: unexpected field"


@pytest.mark.parametrize("body", [None, [], "x", 1, True])
def test_body_must_be_an_object(body: Any) -> None:
    env = envelope()
    env["body"] = body
    rej = rejected(encode(env), RejectCode.SCHEMA_INVALID)
    assert rej.message.startswith("body:")


@pytest.mark.parametrize(
    "issued_at",
    [
        "2026-12-04T19:00:00",  # no offset
        "2026-12-04",
        "19:00:00Z",
        "2026-12-04T19:00Z",
        "2026-02-30T19:00:00Z",
        "2026-12-04T24:00:00Z",
        "2026-12-04T19:00:60Z",
        "2026-12-04T19:00:00+24:00",
        "2026-12-04T19:00:00+05:60",
        "2026-12-04T19:00:00+0100",
        "2026-12-04T19:00:00.Z",
        "1700000000",
        "",
        " 2026-12-04T19:00:00Z",
        "2026-12-04T19:00:00Z\n",
        "\uff12\uff10\uff12\uff16-12-04T19:00:00Z",  # fullwidth digits
        "0001-01-01T00:00:00+01:00",  # out of range in UTC
        1_700_000_000,
        1.5,
        None,
        True,
    ],
)
def test_bad_issued_at(issued_at: Any) -> None:
    rej = rejected(encode(envelope(issued_at=issued_at)), RejectCode.SCHEMA_INVALID)
    assert rej.message.startswith("issued_at:")


# ---------------------------------------------------------------- signed jobs


def test_signed_job_accepted() -> None:
    payload = sign_job(envelope(), PORTAL, "portal-1")
    job = parse(payload, verifier=VERIFIER)
    assert job.job_id == "0b7c-1"
    assert job.payload_sha256 == hashlib.sha256(payload).hexdigest()  # of the raw JWS


def test_unsigned_job_when_signatures_required() -> None:
    rejected(encode(envelope()), RejectCode.SIGNATURE_REQUIRED, None, verifier=VERIFIER)


def test_bad_signature_never_trusts_the_job_id() -> None:
    other = Ed25519PrivateKey.from_private_bytes(bytes([9] * 32))
    payload = sign_job(envelope(), other, "portal-1")
    rejected(payload, RejectCode.SIGNATURE_INVALID, None, verifier=VERIFIER)


def test_unknown_kid() -> None:
    payload = sign_job(envelope(), PORTAL, "portal-2")
    rejected(payload, RejectCode.SIGNATURE_INVALID, None, verifier=VERIFIER)


def test_alg_none() -> None:
    header = b64url_encode(b'{"alg":"none","kid":"portal-1"}')
    payload = f"{header}.{b64url_encode(encode(envelope()))}.".encode()
    rejected(payload, RejectCode.SIGNATURE_INVALID, None, verifier=VERIFIER)


def test_tampered_payload() -> None:
    h, _, s = sign_job(envelope(), PORTAL, "portal-1").split(b".")
    forged = b64url_encode(encode(envelope(body=with_(KEY_BODY, doors=["vault"])))).encode()
    rejected(b".".join([h, forged, s]), RejectCode.SIGNATURE_INVALID, None, verifier=VERIFIER)


def test_signed_garbage_is_malformed() -> None:
    rejected(sign_job(b"\xff not json", PORTAL, "portal-1"), RejectCode.MALFORMED, None, verifier=VERIFIER)


@pytest.mark.parametrize(
    ("issued_at", "ok"),
    [
        ("2026-11-27T19:00:00Z", True),  # exactly max_age old
        ("2026-11-27T18:59:59Z", False),
        ("2020-01-01T00:00:00Z", False),
        ("2026-12-04T19:05:00Z", True),  # exactly max_future ahead
        ("2026-12-04T19:05:01Z", False),
        ("2027-01-01T00:00:00Z", False),
        ("2026-12-04T20:04:00+01:00", True),
        ("2026-12-04T20:06:00+01:00", False),
    ],
)
def test_signed_job_age(issued_at: str, ok: bool) -> None:
    payload = sign_job(envelope(issued_at=issued_at), PORTAL, "portal-1")
    if ok:
        assert parse(payload, verifier=VERIFIER).issued_at == parse_rfc3339(issued_at)
    else:
        rej = rejected(payload, RejectCode.EXPIRED, verifier=VERIFIER)
        assert rej.message.startswith("issued_at:")


def test_age_is_not_checked_for_unsigned_jobs() -> None:
    for issued_at in ("2000-01-01T00:00:00Z", "2099-01-01T00:00:00Z"):
        assert parse(encode(envelope(issued_at=issued_at)))


def test_schema_errors_win_over_expiry() -> None:
    env = envelope(issued_at="2000-01-01T00:00:00Z", body=with_(KEY_BODY, version="7"))
    rejected(sign_job(env, PORTAL, "portal-1"), RejectCode.SCHEMA_INVALID, verifier=VERIFIER)


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse(encode(envelope()), now=datetime(2026, 12, 4, 19))


# =========================================================================== body schemas

BAD_KEY_BODIES: list[tuple[dict[str, Any], str]] = [
    (with_(KEY_BODY, version="7"), "body.version"),
    (with_(KEY_BODY, version=7.0), "body.version"),
    (with_(KEY_BODY, version=True), "body.version"),
    (with_(KEY_BODY, version=-1), "body.version"),
    (with_(KEY_BODY, version=2**63), "body.version"),
    (with_(KEY_BODY, version=None), "body.version"),
    (with_(KEY_BODY, key_id=""), "body.key_id"),
    (with_(KEY_BODY, key_id="k" * 129), "body.key_id"),
    (with_(KEY_BODY, key_id=1042), "body.key_id"),
    (with_(KEY_BODY, key_id=None), "body.key_id"),
    (with_(KEY_BODY, key_id="k/1"), "body.key_id"),
    (with_(KEY_BODY, key_id="k+1"), "body.key_id"),
    (with_(KEY_BODY, key_id="k#1"), "body.key_id"),
    (with_(KEY_BODY, key_id="k\x001"), "body.key_id"),
    (with_(KEY_BODY, key_id="k\t1"), "body.key_id"),
    (with_(KEY_BODY, key_id="k\x7f"), "body.key_id"),
    (with_(KEY_BODY, key_id="k\x9b"), "body.key_id"),
    (with_(KEY_BODY, label=5), "body.label"),
    (with_(KEY_BODY, label="x" * 1025), "body.label"),
    (with_(KEY_BODY, doors="101"), "body.doors"),
    (with_(KEY_BODY, doors=None), "body.doors"),
    (with_(KEY_BODY, doors=["101", "pool", 3]), "body.doors[2]"),
    (with_(KEY_BODY, doors=["101", "pool", ""]), "body.doors[2]"),
    (with_(KEY_BODY, doors=["101", "pool", "a/b"]), "body.doors[2]"),
    (with_(KEY_BODY, doors=["101", "pool", "101"]), "body.doors[2]: duplicate door id"),
    (with_(KEY_BODY, doors=[f"d{i}" for i in range(257)]), "body.doors"),
    (with_(KEY_BODY, credentials=None), "body.credentials"),
    (with_(KEY_BODY, credentials={"type": "door_code", "code": PIN}), "body.credentials"),
    (
        with_(KEY_BODY, credentials=[*KEY_BODY["credentials"], {"type": "door_code", "code": "1234"}]),
        "body.credentials[2]: a second door_code",
    ),
    (
        with_(
            KEY_BODY,
            credentials=[
                KEY_BODY["credentials"][1],
                {**KEY_BODY["credentials"][1], "credential_id": "sk-78"},
            ],
        ),
        "body.credentials[1]: a second smartkey",
    ),
    (with_(KEY_BODY, credentials=[{"type": "nfc", "uid": "x"}]), "body.credentials[0]: 'type'"),
    (
        with_(
            KEY_BODY,
            credentials=[{"type": "smartkey", "credential_id": "s", "public_key": PK, "smartkey": 1}],
        ),
        "body.credentials[0].smartkey: unexpected field",
    ),
    (with_(KEY_BODY, credentials=[{"code": PIN}]), "body.credentials[0]: 'type'"),
    (with_(KEY_BODY, credentials=[{"type": 1, "code": PIN}]), "body.credentials[0]"),
    (with_(KEY_BODY, credentials=["door_code"]), "body.credentials[0]"),
    (with_(KEY_BODY, credentials=[{"type": "door_code"}]), "body.credentials[0].code: field required"),
    (
        with_(KEY_BODY, credentials=[{"type": "door_code", "code": PIN, "slot": 3}]),
        "body.credentials[0].slot: unexpected field",
    ),
    (
        with_(KEY_BODY, credentials=[{"type": "smartkey", "public_key": PK}]),
        "body.credentials[0].credential_id: field required",
    ),
    (
        with_(KEY_BODY, credentials=[{"type": "smartkey", "credential_id": "a/b", "public_key": PK}]),
        "body.credentials[0].credential_id",
    ),
    (with_(KEY_BODY, valid_from="2026-12-05"), "body.valid_from"),
    (with_(KEY_BODY, valid_until="2026-12-08T11:00:00"), "body.valid_until"),
    (with_(KEY_BODY, valid_until=1796727600), "body.valid_until"),
    (with_(KEY_BODY, valid_until="2026-12-05T15:00:00Z"), "body.valid_until: must be later"),
    (with_(KEY_BODY, valid_until="2026-12-05T16:00:00+01:00"), "body.valid_until: must be later"),
    (with_(KEY_BODY, valid_until="2026-12-01T00:00:00Z"), "body.valid_until: must be later"),
    (without(KEY_BODY, "valid_from"), "body.valid_from: field required"),
    (without(KEY_BODY, "valid_until"), "body.valid_until: field required"),
    (without(KEY_BODY, "allow_provisioning"), "body.allow_provisioning: field required"),
    (without(KEY_BODY, "doors"), "body.doors: field required"),
    (without(KEY_BODY, "credentials"), "body.credentials: field required"),
    (without(KEY_BODY, "key_id"), "body.key_id: field required"),
    (with_(KEY_BODY, allow_provisioning=1), "body.allow_provisioning"),
    (with_(KEY_BODY, allow_provisioning="true"), "body.allow_provisioning"),
    (with_(KEY_BODY, allow_provisioning=None), "body.allow_provisioning"),
    (with_(KEY_BODY, reservation_id=889), "body.reservation_id"),
    (with_(KEY_BODY, reservation_id=""), "body.reservation_id"),
    (with_(KEY_BODY, reservation_id="R#889"), "body.reservation_id"),
    (with_(KEY_BODY, owner="x"), "body.owner: unexpected field"),
]


@pytest.mark.parametrize(("body", "fragment"), BAD_KEY_BODIES)
def test_key_upsert_invalid(body: dict[str, Any], fragment: str) -> None:
    rej = body_rejected("key.upsert", body, fragment)
    assert PIN not in rej.message and PK not in rej.message


BAD_CODES = [
    "123",
    "1" * 17,
    "48a913",
    "\uff14\uff18\uff12\uff19",
    "\u0661\u0662\u0663\u0664",
    "1234\n",
    " 1234",
    "12 34",
    "-1234",
    "1e10",
    "",
]


@pytest.mark.parametrize("code", BAD_CODES)
def test_door_code_must_be_ascii_digits(code: str) -> None:
    body = with_(KEY_BODY, credentials=[{"type": "door_code", "code": code}])
    rej = body_rejected("key.upsert", body, "body.credentials[0].code: must be 4-16 ASCII digits")
    if len(code) >= 4:
        assert code not in rej.message and code not in repr(rej) and code not in str(rej)


@pytest.mark.parametrize("code", [482913, 4829.13, None, True, ["482913"]])
def test_door_code_must_be_a_string(code: Any) -> None:
    body = with_(KEY_BODY, credentials=[{"type": "door_code", "code": code}])
    body_rejected("key.upsert", body, "body.credentials[0].code")


def _pk_variants() -> list[Any]:
    std = "+" + PK[1:-1] + "/"  # standard-alphabet characters
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    non_canonical = PK[:-1] + alphabet[alphabet.index(PK[-1]) ^ 1]  # non-zero trailing bits
    return [
        b64url_encode(bytes(31)),
        b64url_encode(bytes(33)),
        b64url_encode(bytes(64)),
        PK + "==",
        PK + "=" * 5,
        PK[:-1],
        std,
        non_canonical,
        PK + " ",
        "",
        "x" * 10_000,
        32,
        None,
        list(PK_RAW),
    ]


@pytest.mark.parametrize("public_key", _pk_variants())
def test_smartkey_public_key_must_be_32_bytes_base64url(public_key: Any) -> None:
    cred = {"type": "smartkey", "credential_id": "sk-1", "public_key": public_key}
    rej = body_rejected("key.upsert", with_(KEY_BODY, credentials=[cred]), "body.credentials[0].public_key")
    if isinstance(public_key, str) and len(public_key) >= 4:
        assert public_key not in rej.message


def test_smartkey_public_key_padding_is_optional_and_normalised() -> None:
    padded = PK + "="
    cred = {"type": "smartkey", "credential_id": "sk-1", "public_key": padded}
    key = parse(encode(envelope(body=with_(KEY_BODY, credentials=[cred])))).body
    assert isinstance(key, KeyUpsert) and key.smartkey is not None
    assert key.smartkey.public_key_bytes == PK_RAW
    assert key.smartkey.public_key.get_secret_value() == PK  # unpadded


def test_only_one_invalid_thing_per_path_is_reported_and_messages_are_bounded() -> None:
    body = with_(KEY_BODY, doors=[7] * 200)
    rej = body_rejected("key.upsert", body, "body.doors[0]", "more)")
    assert len(rej.message) <= 1000


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"key_id": "k-1"}, "body.version: field required"),
        ({"version": 1}, "body.key_id: field required"),
        ({"key_id": "k-1", "version": "8"}, "body.version"),
        ({"key_id": "k-1", "version": 8, "reason": "x"}, "body.reason: unexpected field"),
        ({"key_id": "k+1", "version": 8}, "body.key_id"),
    ],
)
def test_key_revoke_invalid(body: dict[str, Any], fragment: str) -> None:
    body_rejected("key.revoke", body, fragment)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (with_(RESERVATION_BODY, status="CHECKED_IN"), "body.status"),
        (with_(RESERVATION_BODY, status="no_show"), "body.status"),
        (with_(RESERVATION_BODY, status=None), "body.status"),
        (with_(RESERVATION_BODY, channel="kiosk"), "body.channel"),
        (with_(RESERVATION_BODY, channel=1), "body.channel"),
        (with_(RESERVATION_BODY, version=3.5), "body.version"),
        (with_(RESERVATION_BODY, reservation_id="R/889"), "body.reservation_id"),
        (without(RESERVATION_BODY, "status"), "body.status: field required"),
        (without(RESERVATION_BODY, "reservation_id"), "body.reservation_id: field required"),
        (with_(RESERVATION_BODY, guest="x"), "body.guest: unexpected field"),
    ],
)
def test_reservation_upsert_invalid(body: dict[str, Any], fragment: str) -> None:
    body_rejected("reservation.upsert", body, fragment)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (with_(POLICY_BODY, require_checkin_before_provisioning=1), "body.require_checkin"),
        (with_(POLICY_BODY, revoke_on_checkout="false"), "body.revoke_on_checkout"),
        (with_(POLICY_BODY, revoke_on_checkout=None), "body.revoke_on_checkout"),
        (without(POLICY_BODY, "revoke_on_checkout"), "body.revoke_on_checkout: field required"),
        (without(POLICY_BODY, "version"), "body.version: field required"),
        (with_(POLICY_BODY, timezone="UTC"), "body.timezone: unexpected field"),
    ],
)
def test_policy_update_invalid(body: dict[str, Any], fragment: str) -> None:
    body_rejected("policy.update", body, fragment)


SYNC = BODIES["site.sync"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (with_(SYNC, revision="118"), "body.revision"),
        (with_(SYNC, revision=-1), "body.revision"),
        (without(SYNC, "revision"), "body.revision: field required"),
        (with_(SYNC, policy=with_(POLICY_BODY, version="2")), "body.policy.version"),
        (with_(SYNC, policy=[]), "body.policy"),
        (with_(SYNC, reservations=None), "body.reservations"),
        (with_(SYNC, reservations=[with_(RESERVATION_BODY, status="x")]), "body.reservations[0].status"),
        (with_(SYNC, keys=[KEY_BODY, with_(KEY_BODY, doors=["1", 2])]), "body.keys[1].doors[1]"),
        (
            with_(SYNC, keys=[KEY_BODY, with_(KEY_BODY, key_id="k-2"), with_(KEY_BODY, version=9)]),
            "body.keys[2].key_id: duplicate key_id (also at keys[0])",
        ),
        (
            with_(SYNC, reservations=[RESERVATION_BODY, RESERVATION_BODY]),
            "body.reservations[1].reservation_id: duplicate",
        ),
        (
            with_(SYNC, keys=[with_(KEY_BODY, credentials=[{"type": "door_code", "code": "12"}])]),
            "body.keys[0].credentials[0].code",
        ),
        (with_(SYNC, locks=[]), "body.locks: unexpected field"),
        (with_(SYNC, keys=[with_(KEY_BODY, door_code=PIN)]), "body.keys[0].door_code: unexpected"),
    ],
)
def test_site_sync_invalid(body: dict[str, Any], fragment: str) -> None:
    body_rejected("site.sync", body, fragment)


@pytest.mark.parametrize("job_type", ["lock.reconcile", "lock.sync_time"])
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"lock_id": ""}, "body.lock_id"),
        ({"lock_id": "a/b"}, "body.lock_id"),
        ({"lock_id": "+"}, "body.lock_id"),
        ({"lock_id": 101}, "body.lock_id"),
        ({"lock_id": "lock-1", "force": True}, "body.force: unexpected field"),
    ],
)
def test_lock_target_invalid(job_type: str, body: dict[str, Any], fragment: str) -> None:
    body_rejected(job_type, body, fragment)


@pytest.mark.parametrize("body", [{"all": True}, {"lock_id": None}])
def test_republish_body_must_be_empty(body: dict[str, Any]) -> None:
    body_rejected("gateway.republish", body, "unexpected field")


# =========================================================================== secrets


def _key() -> KeyUpsert:
    body = parse(encode(envelope())).body
    assert isinstance(body, KeyUpsert)
    return body


def test_secrets_never_in_repr_str_or_dumps() -> None:
    job = parse(encode(envelope("site.sync")))
    key = _key()
    texts = [
        repr(job),
        str(job),
        repr(key),
        str(key),
        repr(key.credentials),
        str(key.model_dump()),
        json.dumps(key.model_dump(mode="json")),
        key.model_dump_json(),
        repr(job.body),
        str(job.body.model_dump()),
        job.body.model_dump_json(),
    ]
    for text in texts:
        assert PIN not in text and PK not in text, text
    assert key.model_dump(mode="json")["credentials"][0]["code"] == "**********"


def test_model_dump_secret_roundtrip() -> None:
    key = _key()
    dumped = key.model_dump_secret()
    text = json.dumps(dumped)  # JSON-able
    assert PIN in text and PK in text
    assert dumped["valid_from"] == "2026-12-05T15:00:00Z"
    again = KeyUpsert.from_secret_dict(json.loads(text))
    assert again == key
    assert again.door_code is not None and again.door_code.secret_bytes() == PIN.encode()
    assert again.smartkey is not None and again.smartkey.secret_bytes() == PK_RAW


def test_site_sync_model_dump_secret_roundtrip() -> None:
    body = parse(encode(envelope("site.sync"))).body
    assert isinstance(body, SiteSync)
    assert SiteSync.from_secret_dict(json.loads(json.dumps(body.model_dump_secret()))) == body


def test_masked_dump_cannot_be_loaded_back() -> None:
    with pytest.raises(ValidationError) as info:
        KeyUpsert.from_secret_dict(_key().model_dump(mode="json"))
    assert PIN not in str(info.value)


def test_direct_construction_errors_do_not_echo_secrets() -> None:
    for bad in ("48a913", "4829131111111111111"):
        with pytest.raises(ValidationError) as info:
            DoorCode(code=bad)  # type: ignore[arg-type]
        assert bad not in str(info.value) and bad not in repr(info.value)
    bad_pk = b64url_encode(bytes(range(31)))
    with pytest.raises(ValidationError) as info:
        SmartKey(credential_id="sk", public_key=bad_pk)  # type: ignore[arg-type]
    assert bad_pk not in str(info.value)
    with pytest.raises(ValidationError) as info:
        KeyUpsert.from_secret_dict(with_(KEY_BODY, valid_until="2000-01-01T00:00:00Z"))
    assert PIN not in str(info.value) and PK not in str(info.value)


def test_rejection_messages_do_not_echo_valid_secrets_of_an_invalid_key() -> None:
    cred = {"type": "door_code", "code": PIN, PIN: 1}  # even as a member name
    rej = body_rejected("key.upsert", with_(KEY_BODY, credentials=[cred]), "unexpected field")
    assert PIN not in rej.message


def test_rejection_has_no_exception_chain() -> None:
    with pytest.raises(Rejection) as info:
        parse(encode(envelope(body=with_(KEY_BODY, credentials=[{"type": "door_code", "code": "12x4"}]))))
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_python_construction() -> None:
    code = DoorCode(code="1234")  # type: ignore[arg-type]
    assert code.type == "door_code" and code.secret_bytes() == b"1234"
    sk = SmartKey(credential_id="sk-1", public_key=PK + "=")  # type: ignore[arg-type]
    assert sk.type == "smartkey" and sk.public_key_bytes == PK_RAW
    key = KeyUpsert(
        key_id="k-1",
        version=1,
        doors=["101"],
        credentials=[code, sk],
        valid_from=datetime(2026, 12, 5, 16, tzinfo=timezone(timedelta(hours=1))),
        valid_until=None,
        allow_provisioning=False,
    )
    assert key.valid_from == datetime(2026, 12, 5, 15, tzinfo=UTC)
    assert key.valid_from is not None and key.valid_from.tzinfo is UTC
    with pytest.raises(ValidationError):
        KeyUpsert(**{**key.model_dump(), "valid_from": datetime(2026, 12, 5)})  # naive
    with pytest.raises(ValidationError):
        KeyUpsert(**{**key.model_dump(), "version": "1"})


# =========================================================================== datetimes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-04T19:00:00Z", datetime(2026, 12, 4, 19, tzinfo=UTC)),
        ("2026-12-04t19:00:00z", datetime(2026, 12, 4, 19, tzinfo=UTC)),
        ("2026-12-04 19:00:00Z", datetime(2026, 12, 4, 19, tzinfo=UTC)),
        ("2026-12-04T20:30:00+01:30", datetime(2026, 12, 4, 19, tzinfo=UTC)),
        ("2026-12-04T14:00:00-05:00", datetime(2026, 12, 4, 19, tzinfo=UTC)),
        ("2026-12-04T19:00:00-00:00", datetime(2026, 12, 4, 19, tzinfo=UTC)),
        ("2026-12-05T01:00:00+06:00", datetime(2026, 12, 4, 19, tzinfo=UTC)),
        ("2026-12-04T19:00:00.5Z", datetime(2026, 12, 4, 19, 0, 0, 500000, tzinfo=UTC)),
        ("2026-12-04T19:00:00.123456789Z", datetime(2026, 12, 4, 19, 0, 0, 123456, tzinfo=UTC)),
        ("2028-02-29T00:00:00Z", datetime(2028, 2, 29, tzinfo=UTC)),
    ],
)
def test_parse_rfc3339(text: str, expected: datetime) -> None:
    got = parse_rfc3339(text)
    assert got == expected and got.tzinfo is UTC
    job = parse(encode(envelope(issued_at=text)))
    assert job.issued_at == expected and job.issued_at.tzinfo is UTC


def test_body_datetimes_are_normalised_to_utc() -> None:
    body = with_(KEY_BODY, valid_from="2026-12-05T16:00:00+01:00", valid_until="2026-12-08T06:00:00-05:00")
    key = parse(encode(envelope(body=body))).body
    assert isinstance(key, KeyUpsert)
    assert key.valid_from == datetime(2026, 12, 5, 15, tzinfo=UTC) and key.valid_from.tzinfo is UTC
    assert key.valid_until == datetime(2026, 12, 8, 11, tzinfo=UTC) and key.valid_until.tzinfo is UTC
    assert key.model_dump(mode="json")["valid_from"] == "2026-12-05T15:00:00Z"


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (datetime(2026, 12, 4, 19, tzinfo=UTC), "2026-12-04T19:00:00Z"),
        (datetime(2026, 12, 4, 20, tzinfo=timezone(timedelta(hours=1))), "2026-12-04T19:00:00Z"),
        (datetime(2026, 12, 4, 19, 0, 0, 1500, tzinfo=UTC), "2026-12-04T19:00:00.001500Z"),
        (datetime(999, 1, 1, tzinfo=UTC), "0999-01-01T00:00:00Z"),
    ],
)
def test_rfc3339(dt: datetime, text: str) -> None:
    assert rfc3339(dt) == text
    assert parse_rfc3339(text) == dt


def test_rfc3339_rejects_naive() -> None:
    with pytest.raises(ValueError):
        rfc3339(datetime(2026, 12, 4, 19))


# =========================================================================== rejections and acks


def test_rejection_fields_and_error() -> None:
    rej = Rejection(RejectCode.EXPIRED, "issued_at: too old", "j-1", "ab" * 32)
    assert isinstance(rej, Exception)
    assert (rej.code, rej.message, rej.job_id, rej.payload_sha256) == (
        RejectCode.EXPIRED,
        "issued_at: too old",
        "j-1",
        "ab" * 32,
    )
    assert str(rej) == "expired: issued_at: too old"
    assert "j-1" in repr(rej)
    assert rej.to_error() == {"code": "expired", "message": "issued_at: too old"}
    assert json.dumps(rej.to_error())


def test_rejection_message_is_clipped() -> None:
    assert len(Rejection(RejectCode.MALFORMED, "x" * 5000, None, "").message) == 1000


def test_ack_accepted() -> None:
    ack = ack_payload("0b7c-1", "gw-1", "accepted", NOW)
    assert ack == {
        "job_id": "0b7c-1",
        "gateway_id": "gw-1",
        "result": "accepted",
        "error": None,
        "received_at": "2026-12-04T19:00:00Z",
    }
    assert json.dumps(ack)


@pytest.mark.parametrize("result", ["duplicate", "stale"])
def test_ack_duplicate_and_stale(result: Any) -> None:
    ack = ack_payload("0b7c-1", "gw-1", result, NOW, None, "ab" * 32)
    assert ack["result"] == result and ack["error"] is None and "payload_sha256" not in ack


def test_ack_rejected_with_job_id() -> None:
    with pytest.raises(Rejection) as info:
        parse(encode(envelope(v=2)))
    ack = ack_payload("0b7c-1", "gw-1", "rejected", NOW, info.value, info.value.payload_sha256)
    assert ack["error"] == {"code": "unsupported_version", "message": info.value.message}
    assert "payload_sha256" not in ack


def test_ack_rejected_without_job_id_carries_the_hash() -> None:
    payload = b"garbage"
    with pytest.raises(Rejection) as info:
        parse(payload)
    rej = info.value
    ack = ack_payload(rej.job_id, "gw-1", "rejected", NOW, rej)
    assert ack["job_id"] is None
    assert ack["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert ack["error"]["code"] == "malformed"
    explicit = ack_payload(None, "gw-1", "rejected", NOW, rej, "cd" * 32)
    assert explicit["payload_sha256"] == "cd" * 32


def test_ack_consistency_is_enforced() -> None:
    rej = Rejection(RejectCode.MALFORMED, "x", None, "ab")
    with pytest.raises(ValueError):
        ack_payload("j", "gw-1", "rejected", NOW)
    with pytest.raises(ValueError):
        ack_payload("j", "gw-1", "accepted", NOW, rej)
    with pytest.raises(ValueError):
        ack_payload(None, "gw-1", "accepted", NOW)


# =========================================================================== fuzzing

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

_FIELD_NAMES = sorted(
    {n for body in (KEY_BODY, RESERVATION_BODY, POLICY_BODY, SYNC) for n in body}
    | {"type", "code", "credential_id", "public_key", "lock_id"}
)
field_values = st.one_of(
    json_values,
    st.sampled_from([PIN, PK, "2026-12-05T15:00:00Z", "101", "checked_in", "door_code", "smartkey"]),
    st.lists(st.sampled_from(["101", "pool", "a/b", ""]), max_size=3),
)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(_FIELD_NAMES), field_values, max_size=8),
    st.sampled_from(list(BODIES.values())).flatmap(
        lambda b: st.dictionaries(st.sampled_from(_FIELD_NAMES), field_values, max_size=3).map(
            lambda extra: {**copy.deepcopy(b), **extra}
        )
    ),
    json_values,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "v": st.one_of(st.just(1), json_values),
        "job_id": st.one_of(st.just("j-1"), json_values),
        "type": st.one_of(st.sampled_from(list(BODIES)), json_values),
        "issued_at": st.one_of(
            st.just("2026-12-04T19:00:00Z"), st.datetimes().map(lambda d: d.isoformat()), json_values
        ),
        "body": bodies,
    },
)


def _secret_fields(obj: Any) -> set[str]:
    """Values of `code` / `public_key` members anywhere in a JSON value."""
    found: set[str] = set()
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.update(v for k, v in item.items() if k in ("code", "public_key") and isinstance(v, str))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return {v for v in found if len(v) >= 4}


def _check(payload: bytes, **overrides: Any) -> None:
    """parse_job returns a Job or raises Rejection, nothing else; the hash always matches."""
    digest = hashlib.sha256(payload).hexdigest()
    try:
        job = parse(payload, **overrides)
    except Rejection as rej:
        assert rej.payload_sha256 == digest
        assert rej.code in RejectCode
        assert rej.job_id is None or isinstance(rej.job_id, str)
        assert 0 < len(rej.message) <= 1000
        if rej.code == RejectCode.SCHEMA_INVALID:
            signed = overrides.get("verifier") is not None
            raw = b64url_decode(payload.split(b".")[1].decode()) if signed else payload
            for secret in _secret_fields(json.loads(raw)):
                assert secret not in rej.message
        return
    assert isinstance(job, Job) and job.payload_sha256 == digest
    assert job.issued_at.tzinfo is UTC
    keys = [job.body] if isinstance(job.body, KeyUpsert) else []
    keys += job.body.keys if isinstance(job.body, SiteSync) else []
    for key in keys:
        for cred in key.credentials:
            hidden = cred.code if isinstance(cred, DoorCode) else cred.public_key
            assert str(hidden) == "**********" and "**********" in repr(cred)
            assert cred.secret_bytes() not in repr(cred).encode()


@_FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_arbitrary_bytes(payload: bytes) -> None:
    _check(payload)
    _check(payload, verifier=VERIFIER)


@_FUZZ
@given(json_values)
def test_fuzz_arbitrary_json(value: Any) -> None:
    _check(json.dumps(value).encode())


@_FUZZ
@given(envelopes)
def test_fuzz_envelopes(env: dict[str, Any]) -> None:
    _check(json.dumps(env).encode())
    _check(sign_job(env, PORTAL, "portal-1"), verifier=VERIFIER)


@_FUZZ
@given(st.sampled_from(list(BODIES)), st.data())
def test_fuzz_mutated_valid_bodies(job_type: str, data: st.DataObject) -> None:
    body = copy.deepcopy(BODIES[job_type])
    if body:
        name = data.draw(st.sampled_from(sorted(body)))
        body[name] = data.draw(field_values)
    _check(json.dumps(envelope(job_type, body)).encode())


ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/+#"),
    min_size=1,
    max_size=20,
)
aware_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=150, deadline=None)
@given(
    key_id=ids,
    version=st.integers(0, 2**63 - 1),
    doors=st.lists(ids, unique=True, max_size=5),
    pin=st.from_regex(r"[0-9]{4,16}", fullmatch=True),
    pk=st.binary(min_size=32, max_size=32),
    start=aware_datetimes,
    length=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=400)),
    allow=st.booleans(),
)
def test_valid_keys_roundtrip(
    key_id: str,
    version: int,
    doors: list[str],
    pin: str,
    pk: bytes,
    start: datetime,
    length: timedelta,
    allow: bool,
) -> None:
    body = {
        "key_id": key_id,
        "version": version,
        "doors": doors,
        "credentials": [
            {"type": "door_code", "code": pin},
            {"type": "smartkey", "credential_id": "sk", "public_key": b64url_encode(pk)},
        ],
        "valid_from": rfc3339(start),
        "valid_until": rfc3339(start + length),
        "allow_provisioning": allow,
    }
    key = parse(encode(envelope(body=body))).body
    assert isinstance(key, KeyUpsert)
    assert key.valid_from == start and key.valid_until == start + length
    assert key.door_code is not None and key.door_code.secret_bytes() == pin.encode()
    assert key.smartkey is not None and key.smartkey.public_key_bytes == pk
    assert KeyUpsert.from_secret_dict(json.loads(json.dumps(key.model_dump_secret()))) == key
    if len(pin) >= 6:
        assert pin not in repr(key)
