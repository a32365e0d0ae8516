"""The seed's walk-through on a real broker, real SQLite and in-process memory locks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Rig, make_rig
from tests.harness import Broker, job, key_body

PIN = "482913"


async def test_provisioning_off_then_on(rig: Rig) -> None:
    p = rig.portal
    j1 = job("key.upsert", key_body("k-1", 1, ["101", "pool", "gym"], code=PIN, allow=False))
    await p.publish(j1)
    assert (await p.wait_ack(j1["job_id"]))["result"] == "accepted"
    door = await p.wait_door("k-1", "101", "pending_provisioning")
    assert door["reason"] == "provisioning_disabled"
    assert door["message"].startswith("The credentials haven't been assigned to the door yet.")
    assert door["credentials"] == {"door_code": "pending_provisioning"}
    assert "gym" not in p.key_status("k-1")["doors"]  # not this gateway's door
    assert not rig.locks["lock-101"].press_pin(PIN)

    j2 = job("key.upsert", key_body("k-1", 2, ["101", "pool", "gym"], code=PIN, allow=True))
    await p.publish(j2)
    await p.wait_door("k-1", "101", "provisioned")
    await p.wait_door("k-1", "pool", "provisioned")
    assert rig.locks["lock-101"].press_pin(PIN)
    assert rig.locks["lock-pool"].press_pin(PIN)
    st = p.key_status("k-1")
    assert st["key_version"] == 2 and st["doors"]["101"]["attempts"] == 1


async def test_reservation_checkin_and_checkout(rig: Rig) -> None:
    p = rig.portal
    await p.publish(job("policy.update", {"version": 1, "require_checkin_before_provisioning": True,
                                          "revoke_on_checkout": True}))
    await p.publish(job("reservation.upsert", {"reservation_id": "R-1", "version": 1, "status": "booked"}))
    await p.publish(job("key.upsert", key_body("k-2", 1, ["101"], code="5551234", reservation="R-1")))
    door = await p.wait_door("k-2", "101", "pending_provisioning")
    assert door["reason"] == "reservation_not_checked_in"
    assert not rig.locks["lock-101"].press_pin("5551234")

    # Check-in alone provisions the key: no further key job.
    await p.publish(job("reservation.upsert", {"reservation_id": "R-1", "version": 2,
                                               "status": "checked_in", "channel": "online"}))
    await p.wait_door("k-2", "101", "provisioned")
    assert rig.locks["lock-101"].press_pin("5551234")

    await p.publish(job("reservation.upsert", {"reservation_id": "R-1", "version": 3,
                                               "status": "checked_out"}))
    await p.wait_for(lambda: f"{p.gwroot}/keys/k-2" in p.retained and not p.retained[f"{p.gwroot}/keys/k-2"],
                     10, "key status cleared")
    assert not rig.locks["lock-101"].press_pin("5551234")
    assert rig.locks["lock-101"].list_slots()[1] == frozenset()
    states = [e["to"] for e in p.json_on("events") if e.get("key_id") == "k-2"]
    assert states[-2:] == ["revoking", "revoked"]


async def test_rejections_and_version_rule(rig: Rig) -> None:
    p = rig.portal
    await p.publish(b"not json")
    await p.publish(job("key.upsert", key_body("k-3", 5, ["101"]), job_id="j-a"))
    await p.wait_ack("j-a")
    await p.publish(job("key.upsert", key_body("k-3", 4, ["101"]), job_id="j-b"))
    assert (await p.wait_ack("j-b"))["result"] == "stale"
    await p.publish(job("key.upsert", key_body("k-3", 5, ["101"]), job_id="j-a"))
    await p.publish(job("key.revoke", {"key_id": "k-3", "version": 6}, job_id="j-c"))
    await p.wait_ack("j-c")
    acks = [a for a in p.json_on("acks") if a["job_id"] == "j-a"]
    assert [a["result"] for a in acks] == ["accepted", "duplicate"]
    # An older upsert after the revoke cannot bring the key back.
    await p.publish(job("key.upsert", key_body("k-3", 5, ["101"]), job_id="j-d"))
    assert (await p.wait_ack("j-d"))["result"] == "stale"
    bad = await p.wait_for(lambda: p.acks().get(None))
    assert bad["result"] == "rejected" and bad["error"]["code"] == "malformed"
    assert len(bad["payload_sha256"]) == 64


async def test_status_from_lock_io_is_published_without_another_message(
    tmp_path: Path, broker: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No health ticks to flush the outbox by accident, and a lock slow enough that the outbox
    # is drained long before the write is confirmed: only the write itself can wake the relay.
    monkeypatch.setenv("LOCKGW_GATEWAY__HEALTH_INTERVAL_S", "3600")
    locks = [{"id": "lock-101", "door_id": "101", "driver": "memory", "latency_s": 0.3}]
    async with make_rig(tmp_path, broker, prefix, locks) as rig:
        p = rig.portal
        await p.publish(job("key.upsert", key_body("k-9", 1, ["101"], code=PIN)))
        await p.wait_door("k-9", "101", "provisioned", timeout=8)
        await p.publish(job("key.revoke", {"key_id": "k-9", "version": 2}))
        await p.wait_for(lambda: p.retained.get(f"{p.gwroot}/keys/k-9") == b"", 8, "key status cleared")
