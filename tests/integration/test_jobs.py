"""Job intake over a real broker: every rejection code, unreadable job ids, signed jobs, duplicates.

After each bad input the daemon must still take a good job, and nothing in the cache may change.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.jws import encode_public_key, sign_job
from tests.conftest import Rig, make_rig
from tests.harness import Broker, job, key_body

CACHE_TABLES = ("jobs", "keys", "reservations", "door_status", "slots")


def cache(rig: Rig) -> dict[str, Any]:
    """Everything a rejected job must leave alone."""
    counts = rig.gw.store.counts()
    return {
        **{t: counts[t] for t in CACHE_TABLES},
        "policy": rig.gw.store.policy(),
        "lock-101": rig.locks["lock-101"].list_slots(),
    }


async def rejected(rig: Rig, payload: bytes, *, gateway_topic: bool = False,
                   job_id: str | None = None) -> dict[str, Any]:
    """Publish a bad payload; return its ack (found by job id or by payload hash)."""
    p = rig.portal
    sha = hashlib.sha256(payload).hexdigest()
    await p.publish(payload, gateway_topic=gateway_topic)

    def find() -> dict[str, Any] | None:
        for a in p.json_on("acks"):
            if a.get("payload_sha256") == sha:
                return a
        jid = job_id
        if jid is None:
            try:
                jid = json.loads(payload).get("job_id")
            except (ValueError, AttributeError):
                return None
        return next((a for a in p.json_on("acks") if jid and a["job_id"] == jid), None)

    ack: dict[str, Any] = await p.wait_for(find, 10, f"ack for {payload[:40]!r}")
    assert ack["result"] == "rejected", ack
    assert ack["gateway_id"] == "gw-1" and ack["received_at"].endswith("Z")
    return ack


async def still_accepts(rig: Rig, n: int) -> None:
    """A good job is accepted after the bad ones (the daemon is alive and subscribed)."""
    good = job("reservation.upsert", {"reservation_id": f"R-ok-{n}", "version": 1, "status": "booked"})
    await rig.portal.publish(good)
    assert (await rig.portal.wait_ack(good["job_id"]))["result"] == "accepted"


def envelope(**over: Any) -> dict[str, Any]:
    base = job("key.upsert", key_body("k-bad", 1, ["101"]))
    base.update(over)
    return base


BAD: list[tuple[str, bytes, str, str | None]] = [
    # (case, payload, code, a substring the message must hold)
    ("not json", b"{not json", "malformed", "not valid JSON"),
    ("not utf-8", b"\xff\xfe\x00", "malformed", "UTF-8"),
    ("array", b"[1, 2, 3]", "malformed", "JSON object"),
    ("string", b'"key.upsert"', "malformed", "JSON object"),
    ("empty", b"", "malformed", None),
    ("v missing", json.dumps({k: v for k, v in envelope().items() if k != "v"}).encode(),
     "unsupported_version", "v"),
    ("v 2", json.dumps(envelope(v=2)).encode(), "unsupported_version", "v"),
    ("v string", json.dumps(envelope(v="1")).encode(), "schema_invalid", "v"),
    ("type", json.dumps(envelope(type="key.explode")).encode(), "unknown_type", "type"),
    ("version type",
     json.dumps(envelope(body={**key_body("k-bad", 1, ["101"]), "version": "seven"})).encode(),
     "schema_invalid", "body.version"),
    ("doors type", json.dumps(envelope(body={**key_body("k-bad", 1, ["101"]), "doors": "101"})).encode(),
     "schema_invalid", "body.doors"),
    ("status enum", json.dumps(job("reservation.upsert", {"reservation_id": "R-x", "version": 1,
                                                          "status": "gone"})).encode(),
     "schema_invalid", "body.status"),
    ("issued_at", json.dumps(envelope(issued_at="yesterday")).encode(), "schema_invalid", "issued_at"),
    ("job_id type", json.dumps(envelope(job_id=17)).encode(), "schema_invalid", "job_id"),
]


async def test_every_unsigned_rejection_leaves_cache_alone(rig: Rig) -> None:
    await still_accepts(rig, 0)
    before = cache(rig)
    for n, (case, payload, code, words) in enumerate(BAD, 1):
        ack = await rejected(rig, payload, gateway_topic=n % 2 == 0)
        assert ack["error"]["code"] == code, (case, ack)
        if words:
            assert words in ack["error"]["message"], (case, ack)
        try:
            readable = isinstance(json.loads(payload).get("job_id"), str)
        except (ValueError, AttributeError):
            readable = False
        if readable:
            assert ack["job_id"] == json.loads(payload)["job_id"] and "payload_sha256" not in ack
        else:
            assert ack["job_id"] is None, case
            assert ack["payload_sha256"] == hashlib.sha256(payload).hexdigest(), case
        after = cache(rig)
        assert after == before, case
    assert rig.gw.engine.counters.rejected == len(BAD)
    await still_accepts(rig, 1)
    assert not rig.locks["lock-101"].press_pin("482913")


async def test_too_large(tmp_path: Path, broker: Broker, prefix: str,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    # The rig's TOML already has an [mqtt] table; the environment override sets the limit.
    monkeypatch.setenv("LOCKGW_MQTT__MAX_PAYLOAD_BYTES", "2048")
    async with make_rig(tmp_path, broker, prefix) as rig:
        assert rig.gw.settings.mqtt.max_payload_bytes == 2048
        big = job("key.upsert", {**key_body("k-big", 1, ["101"]), "label": "x" * 4000})
        payload = json.dumps(big).encode()
        ack = await rejected(rig, payload)
        assert ack["error"]["code"] == "too_large"
        # Too large is decided before parsing: the id is not read, the hash identifies it.
        assert ack["job_id"] is None and ack["payload_sha256"] == hashlib.sha256(payload).hexdigest()
        assert rig.gw.store.get_key("k-big") is None
        await still_accepts(rig, 0)


@pytest.fixture
def signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def signed_extra(key: Ed25519PrivateKey) -> str:
    return (f'[security]\njob_keys = {{ portal-1 = "{encode_public_key(key.public_key())}" }}\n'
            "max_job_age_s = 3600\nmax_future_skew_s = 60\n")


async def test_signed_jobs(tmp_path: Path, broker: Broker, prefix: str, signer: Ed25519PrivateKey) -> None:
    async with make_rig(tmp_path, broker, prefix, extra=signed_extra(signer)) as rig:
        p = rig.portal
        good = job("key.upsert", key_body("k-s", 1, ["101"], code="7314"))
        await p.publish(sign_job(good, signer, "portal-1"))
        assert (await p.wait_ack(good["job_id"]))["result"] == "accepted"
        await p.wait_door("k-s", "101", "provisioned")
        before = cache(rig)

        plain = job("key.upsert", key_body("k-s", 2, ["101"], allow=False))
        ack = await rejected(rig, json.dumps(plain).encode())
        assert ack["error"]["code"] == "signature_required"

        other = Ed25519PrivateKey.generate()
        forged = job("key.revoke", {"key_id": "k-s", "version": 3})
        ack = await rejected(rig, sign_job(forged, other, "portal-1"))
        assert ack["error"]["code"] == "signature_invalid"
        ack = await rejected(rig, sign_job(forged, signer, "portal-2"))
        assert ack["error"]["code"] == "signature_invalid" and "kid" in ack["error"]["message"]
        # A signature over another payload: tamper with the signed body.
        h, _b, s = sign_job(forged, signer, "portal-1").split(b".")
        _h2, b2, _s2 = sign_job(job("key.revoke", {"key_id": "k-s", "version": 9}), signer,
                                "portal-1").split(b".")
        ack = await rejected(rig, b".".join((h, b2, s)))
        assert ack["error"]["code"] == "signature_invalid"

        old = job("key.revoke", {"key_id": "k-s", "version": 4})
        old["issued_at"] = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        ack = await rejected(rig, sign_job(old, signer, "portal-1"), job_id=old["job_id"])
        assert ack["error"]["code"] == "expired" and ack["job_id"] == old["job_id"]
        future = job("key.revoke", {"key_id": "k-s", "version": 5})
        future["issued_at"] = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        ack = await rejected(rig, sign_job(future, signer, "portal-1"), job_id=future["job_id"])
        assert ack["error"]["code"] == "expired"

        assert cache(rig) == before
        assert rig.locks["lock-101"].press_pin("7314")  # nothing was revoked by a bad job
        ok = job("key.revoke", {"key_id": "k-s", "version": 6})
        await p.publish(sign_job(ok, signer, "portal-1"), gateway_topic=True)
        assert (await p.wait_ack(ok["job_id"]))["result"] == "accepted"
        await p.wait_for(lambda: p.retained.get(f"{p.gwroot}/keys/k-s") == b"", 10, "k-s cleared")
        assert not rig.locks["lock-101"].press_pin("7314")


async def test_duplicate_job_id_changes_nothing(rig: Rig) -> None:
    p = rig.portal
    first = job("key.upsert", key_body("k-d", 1, ["101"], code="2468"), job_id="dup-1")
    await p.publish(first)
    await p.wait_door("k-d", "101", "provisioned")
    # Same job id, different content (a portal bug or a replay): the id decides, nothing changes.
    again = job("key.upsert", key_body("k-d", 2, ["101"], code="1357"), job_id="dup-1")
    await p.publish(again)
    await p.wait_for(lambda: len([a for a in p.json_on("acks") if a["job_id"] == "dup-1"]) == 2)
    assert [a["result"] for a in p.json_on("acks") if a["job_id"] == "dup-1"] == ["accepted", "duplicate"]
    assert rig.gw.store.key_version("k-d") == (1, False)
    assert rig.locks["lock-101"].press_pin("2468") and not rig.locks["lock-101"].press_pin("1357")


async def test_maintenance_jobs_on_gateway_topic(rig: Rig) -> None:
    p = rig.portal
    await p.publish(job("key.upsert", key_body("k-m", 1, ["101"], code="9021")))
    await p.wait_door("k-m", "101", "provisioned")
    rig.locks["lock-101"].wipe()  # the lock lost its memory behind our back
    rec = job("lock.reconcile", {"lock_id": "lock-101"})
    await p.publish(rec, gateway_topic=True)
    assert (await p.wait_ack(rec["job_id"]))["result"] == "accepted"
    report = await p.wait_for(lambda: [e for e in p.json_on("events") if e["type"] == "lock_reconcile"])
    assert report[0]["lock_id"] == "lock-101" and report[0]["missing"]
    await p.wait_for(lambda: rig.locks["lock-101"].press_pin("9021"), 10, "PIN rewritten")
    sync = job("lock.sync_time", {})
    await p.publish(sync, gateway_topic=True)
    assert (await p.wait_ack(sync["job_id"]))["result"] == "accepted"
    n = len(p.messages)
    rep = job("gateway.republish", {})
    await p.publish(rep, gateway_topic=True)
    await p.wait_for(lambda: any(t == f"{p.gwroot}/keys/k-m" for t, _p, _r in p.messages[n:]), 10,
                     "republished key status")
