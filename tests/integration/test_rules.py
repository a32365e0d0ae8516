"""The contract's provisioning rules end to end: real broker, real SQLite, in-process memory locks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drivers.base import Caps, LockOfflineError
from drivers.sim.model import SimulatedLock
from tests.conftest import Rig, make_rig
from tests.harness import Broker, Portal, job, key_body

SK = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"  # base64url, 32 bytes


def cleared(p: Portal, key_id: str) -> bool:
    """The retained key status was cleared with an empty payload."""
    return p.retained.get(f"{p.gwroot}/keys/{key_id}") == b""


async def send(p: Portal, type_: str, body: dict[str, Any], **kw: Any) -> str:
    j = job(type_, body)
    await p.publish(j, **kw)
    return str((await p.wait_ack(j["job_id"]))["result"])


def transitions(p: Portal, key_id: str, door: str) -> list[str]:
    return [e["to"] for e in p.json_on("events")
            if e["type"] == "door_status" and e["key_id"] == key_id and e["door_id"] == door]


async def test_revoke_tombstone_beats_older_upsert(rig: Rig) -> None:
    p, lock = rig.portal, rig.locks["lock-101"]
    assert await send(p, "key.upsert", key_body("k-1", 1, ["101", "pool"], code="1111")) == "accepted"
    await p.wait_door("k-1", "101", "provisioned")
    assert await send(p, "key.revoke", {"key_id": "k-1", "version": 3}) == "accepted"
    await p.wait_for(lambda: cleared(p, "k-1"), 10, "k-1 cleared")
    assert transitions(p, "k-1", "101")[-2:] == ["revoking", "revoked"]
    assert await send(p, "key.upsert", key_body("k-1", 2, ["101"], code="1111")) == "stale"
    assert await send(p, "key.revoke", {"key_id": "k-1", "version": 3}) == "stale"
    assert not lock.press_pin("1111") and rig.gw.store.slots_of("lock-101", "k-1") == {}
    # A newer upsert brings the key back.
    assert await send(p, "key.upsert", key_body("k-1", 4, ["101"], code="1111")) == "accepted"
    await p.wait_door("k-1", "101", "provisioned")
    assert lock.press_pin("1111")


async def test_expiry_by_timer(rig: Rig) -> None:
    p, lock = rig.portal, rig.locks["lock-101"]
    until = datetime.now(UTC) + timedelta(seconds=2)
    await send(p, "key.upsert", key_body("k-e", 1, ["101"], code="2222", valid_until=until))
    await p.wait_door("k-e", "101", "provisioned")
    assert lock.press_pin("2222")
    # No job: the clock passing valid_until alone removes the credential.
    await p.wait_for(lambda: cleared(p, "k-e"), 10, "k-e cleared at valid_until")
    assert transitions(p, "k-e", "101")[-1] == "expired"
    last = [pl for t, pl, _r in p.messages if t == f"{p.gwroot}/keys/k-e" and pl][-1]
    assert b'"expired"' in last
    assert lock.list_slots()[1] == frozenset() and not lock.press_pin("2222")
    assert rig.gw.store.slots_of("lock-101", "k-e") == {}


async def test_checkout_and_cancel(rig: Rig) -> None:
    p, lock = rig.portal, rig.locks["lock-101"]
    await send(p, "policy.update", {"version": 1, "require_checkin_before_provisioning": False,
                                    "revoke_on_checkout": False})
    await send(p, "reservation.upsert", {"reservation_id": "R-1", "version": 1, "status": "checked_in"})
    await send(p, "key.upsert", key_body("k-c", 1, ["101"], code="3333", reservation="R-1"))
    await p.wait_door("k-c", "101", "provisioned")
    await send(p, "reservation.upsert", {"reservation_id": "R-1", "version": 2, "status": "checked_out"})
    await send(p, "gateway.republish", {}, gateway_topic=True)  # a barrier: the checkout was evaluated
    assert p.door("k-c", "101")["state"] == "provisioned" and lock.press_pin("3333")
    # The policy switching revoke_on_checkout on re-evaluates the linked key at once.
    await send(p, "policy.update", {"version": 2, "require_checkin_before_provisioning": False,
                                    "revoke_on_checkout": True})
    await p.wait_for(lambda: cleared(p, "k-c"), 10, "k-c revoked by policy")
    assert not lock.press_pin("3333")
    # Cancel revokes too.
    await send(p, "reservation.upsert", {"reservation_id": "R-2", "version": 1, "status": "booked"})
    await send(p, "key.upsert", key_body("k-x", 1, ["101"], code="4444", reservation="R-2"))
    await p.wait_door("k-x", "101", "provisioned")
    await send(p, "reservation.upsert", {"reservation_id": "R-2", "version": 2, "status": "cancelled"})
    await p.wait_for(lambda: cleared(p, "k-x"), 10, "k-x revoked by cancel")
    assert transitions(p, "k-x", "101")[-1] == "revoked" and not lock.press_pin("4444")


async def test_policy_update_reevaluates_linked_keys(rig: Rig) -> None:
    p, lock = rig.portal, rig.locks["lock-101"]
    await send(p, "reservation.upsert", {"reservation_id": "R-3", "version": 1, "status": "booked"})
    await send(p, "key.upsert", key_body("k-g", 1, ["101"], code="5151", reservation="R-3"))
    await send(p, "key.upsert", key_body("k-staff", 1, ["101"], code="6161"))
    await p.wait_door("k-g", "101", "provisioned")  # default policy: no check-in needed
    await p.wait_door("k-staff", "101", "provisioned")
    await send(p, "policy.update", {"version": 1, "require_checkin_before_provisioning": True,
                                    "revoke_on_checkout": True})
    door = await p.wait_door("k-g", "101", "pending_provisioning")
    assert door["reason"] == "reservation_not_checked_in"
    assert not lock.press_pin("5151") and lock.press_pin("6161")  # staff key untouched
    assert p.door("k-staff", "101")["state"] == "provisioned"
    assert await send(p, "policy.update", {"version": 1, "require_checkin_before_provisioning": False,
                                           "revoke_on_checkout": True}) == "stale"


async def test_door_and_credential_removed_from_key(rig: Rig) -> None:
    p, l101, lpool = rig.portal, rig.locks["lock-101"], rig.locks["lock-pool"]
    await send(p, "key.upsert", key_body("k-r", 1, ["101", "pool"], code="7171", smartkey=SK))
    await p.wait_door("k-r", "101", "provisioned")
    await p.wait_door("k-r", "pool", "provisioned")
    assert p.door("k-r", "101")["credentials"] == {"door_code": "provisioned", "smartkey": "provisioned"}
    assert len(l101.list_slots()[1]) == 2 and lpool.press_pin("7171")
    # Drop the pool from the keychain and the door code from the key.
    await send(p, "key.upsert", key_body("k-r", 2, ["101"], code=None, smartkey=SK))
    await p.wait_door("k-r", "pool", "revoked")
    await p.wait_for(lambda: p.door("k-r", "101")["credentials"] == {"smartkey": "provisioned"}
                     and p.door("k-r", "101")["state"] == "provisioned", 10, "door code removed")
    assert not lpool.press_pin("7171") and lpool.list_slots()[1] == frozenset()
    assert not l101.press_pin("7171") and len(l101.list_slots()[1]) == 1
    from gateway.jws import b64url_decode
    assert l101.present_smartkey(b64url_decode(SK))
    assert set(rig.gw.store.slots_of("lock-101", "k-r")) == {"smartkey"}


async def test_site_sync(rig: Rig) -> None:
    p, lock = rig.portal, rig.locks["lock-101"]
    await send(p, "key.upsert", key_body("k-a", 2, ["101"], code="8001"))
    await send(p, "key.upsert", key_body("k-b", 1, ["101"], code="8002"))
    await send(p, "key.upsert", key_body("k-old", 5, ["101"], code="8003"))
    for k in ("k-a", "k-b", "k-old"):
        await p.wait_door(k, "101", "provisioned")
    snapshot = {
        "revision": 118,
        "policy": {"version": 1, "require_checkin_before_provisioning": True, "revoke_on_checkout": True},
        "reservations": [{"reservation_id": "R-9", "version": 1, "status": "booked"}],
        "keys": [
            key_body("k-a", 3, ["101"], code="8011"),              # newer: applied
            key_body("k-old", 4, ["101"], code="8033"),            # older than held: ignored
            key_body("k-n", 1, ["101"], code="8004"),              # new staff key
            key_body("k-res", 1, ["101"], code="8005", reservation="R-9"),  # waits for check-in
        ],
    }  # k-b is absent: revoked
    assert await send(p, "site.sync", snapshot) == "accepted"
    await p.wait_for(lambda: cleared(p, "k-b"), 10, "k-b revoked by sync")
    await p.wait_door("k-n", "101", "provisioned")
    await p.wait_for(lambda: (p.key_status("k-a") or {}).get("key_version") == 3
                     and p.door("k-a", "101")["state"] == "provisioned", 10, "k-a v3")
    res = await p.wait_door("k-res", "101", "pending_provisioning")
    assert res["reason"] == "reservation_not_checked_in"
    assert lock.press_pin("8011") and not lock.press_pin("8001") and not lock.press_pin("8002")
    assert lock.press_pin("8003") and not lock.press_pin("8033") and lock.press_pin("8004")
    assert rig.gw.store.key_version("k-old") == (5, False)
    assert rig.gw.store.meta("sync_revision") == "118"


async def test_out_of_order_delivery(rig: Rig) -> None:
    p, lock = rig.portal, rig.locks["lock-101"]
    assert await send(p, "key.upsert", key_body("k-o", 3, ["101"], code="9003")) == "accepted"
    assert await send(p, "key.upsert", key_body("k-o", 2, ["101"], code="9002")) == "stale"
    assert await send(p, "key.upsert", key_body("k-o", 3, ["101"], code="9002")) == "stale"
    await p.wait_door("k-o", "101", "provisioned")
    assert p.key_status("k-o")["key_version"] == 3
    assert lock.press_pin("9003") and not lock.press_pin("9002")


async def test_lock_without_schedule_gets_write_at_valid_from(tmp_path: Path, broker: Broker,
                                                              prefix: str) -> None:
    sim = SimulatedLock(serial="nosched", caps=Caps.PIN | Caps.SMARTKEY | Caps.EVENTS)
    async with make_rig(tmp_path, broker, prefix, sims={"lock-101": sim}) as rig:
        p = rig.portal
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        await send(p, "key.upsert", key_body("k-s", 1, ["101", "pool"], code="1212", valid_from=start))
        await p.wait_door("k-s", "pool", "provisioned")  # the pool lock enforces the window itself
        assert rig.locks["lock-pool"].list_slots()[1]
        assert not sim.list_slots()[1], "written before valid_from to a lock without a schedule"
        assert p.door("k-s", "101")["state"] != "provisioned"
        await p.wait_door("k-s", "101", "provisioned", timeout=10)
        assert datetime.now(UTC) >= start
        assert sim.press_pin("1212")


async def test_transient_failures_are_retried(rig: Rig) -> None:
    p, drv = rig.portal, rig.drivers["lock-101"]
    drv.fail_next(LockOfflineError("blip", lock_id="lock-101"))
    await send(p, "key.upsert", key_body("k-t", 1, ["101"], code="3434"))
    await p.wait_door("k-t", "101", "provisioned")
    seen = [(s["state"], s["reason"]) for s in (e for e in p.json_on("events")
                                                if e["type"] == "door_status" and e["key_id"] == "k-t")
            for s in [{"state": s["to"], "reason": s["reason"]}]]
    assert ("provisioning", "lock_offline") in seen
    assert p.door("k-t", "101")["attempts"] == 2


async def test_duplicate_code_and_full_lock(tmp_path: Path, broker: Broker, prefix: str) -> None:
    locks = [{"id": "lock-101", "door_id": "101", "driver": "memory"},
             {"id": "lock-pool", "door_id": "pool", "driver": "memory", "slots": 1}]
    async with make_rig(tmp_path, broker, prefix, locks=locks) as rig:
        p = rig.portal
        await send(p, "key.upsert", key_body("k-1", 1, ["101", "pool"], code="5656"))
        await p.wait_door("k-1", "101", "provisioned")
        await p.wait_door("k-1", "pool", "provisioned")
        await send(p, "key.upsert", key_body("k-2", 1, ["101"], code="5656"))
        door = await p.wait_door("k-2", "101", "failed")
        assert door["reason"] == "duplicate_code" and door["credentials"] == {"door_code": "failed"}
        assert "door code" in door["message"]
        await send(p, "key.upsert", key_body("k-3", 1, ["pool"], code="7878"))
        door = await p.wait_door("k-3", "pool", "failed")
        assert door["reason"] == "lock_full"
        assert rig.locks["lock-pool"].press_pin("5656") and not rig.locks["lock-pool"].press_pin("7878")
        # Freeing the slot and a new version of the key provisions it.
        await send(p, "key.revoke", {"key_id": "k-1", "version": 2})
        await p.wait_for(lambda: cleared(p, "k-1"), 10, "k-1 cleared")
        await send(p, "key.upsert", key_body("k-3", 2, ["pool"], code="7878"))
        await p.wait_door("k-3", "pool", "provisioned")


async def test_breaker_trips_and_recovers(rig: Rig) -> None:
    p, drv = rig.portal, rig.drivers["lock-101"]
    drv.offline = True
    await send(p, "key.upsert", key_body("k-b", 1, ["101"], code="4545"))
    door = await p.wait_door("k-b", "101", "provisioning")
    door = await p.wait_for(lambda: (d := p.door("k-b", "101")) and d["reason"] == "lock_offline" and d)
    door = await p.wait_door("k-b", "101", "failed")
    assert door["reason"] == "lock_offline" and door["attempts"] == 3  # max_attempts in the rig
    def alarms() -> list[str]:
        return [e["alarm"] for e in p.json_on("events")
                if e["type"] == "lock_alarm" and e["lock_id"] == "lock-101"]

    try:
        await p.wait_for(lambda: alarms() and alarms()[-1] == "offline", 10, "offline alarm")
    except AssertionError:
        raise AssertionError(f"no offline alarm last: {alarms()}") from None
    health = await p.wait_for(lambda: (h := p.retained.get(f"{p.gwroot}/locks/lock-101"))
                              and b'"online":false' in h and h)
    assert b'"door_id":"101"' in health
    # Nothing else is queued for the lock: the worker itself must probe it after the pause.
    await asyncio.sleep(2.5)  # longer than the breaker cooldown (1 s): a paused lock is re-probed
    drv.offline = False
    await p.wait_door("k-b", "101", "provisioned", timeout=10)
    await send(p, "key.upsert", key_body("k-b2", 1, ["101"], code="4646"))
    await p.wait_door("k-b2", "101", "provisioned", timeout=10)
    assert alarms()[-1] == "online" and "offline" in alarms()
    await p.wait_for(lambda: b'"online":true' in p.retained.get(f"{p.gwroot}/locks/lock-101", b""))
    assert rig.locks["lock-101"].press_pin("4545") and rig.locks["lock-101"].press_pin("4646")


async def test_revoke_is_read_back(rig: Rig) -> None:
    p, lock = rig.portal, rig.locks["lock-101"]
    await send(p, "key.upsert", key_body("k-i", 1, ["101"], code="6767"))
    await p.wait_door("k-i", "101", "provisioned")
    lock.faults.ignore_clear = True  # the lock answers OK to CLEAR but keeps the credential
    await send(p, "key.revoke", {"key_id": "k-i", "version": 2})
    door = await p.wait_for(lambda: (d := p.door("k-i", "101")) and d["reason"] == "lock_error" and d)
    assert door["state"] in ("revoking", "failed")
    await p.wait_for(lambda: p.door("k-i", "101")["attempts"] >= 3, 10, "removal retried")
    assert "revoked" not in transitions(p, "k-i", "101") and not cleared(p, "k-i")
    assert lock.press_pin("6767")
    # A removal is never abandoned: once the lock behaves, the credential leaves.
    lock.faults.ignore_clear = False
    await p.wait_for(lambda: cleared(p, "k-i"), 10, "k-i finally revoked")
    assert not lock.press_pin("6767") and transitions(p, "k-i", "101")[-1] == "revoked"
