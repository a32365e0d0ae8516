"""Issue #3: end to end over real (pseudo-)serial ports — Mosquitto, the daemon as a process,
LockLink locks simulated on ptys (three on one multi-drop bus, one alone at address 0)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drivers.base import CredentialType, SlotWrite
from tests.harness import Broker, job, key_body
from tests.integration.serial_rig import SerialRig, serial_rig, sim_cli, smartkey_pub

PIN = "482913"


async def cli_press(rig: SerialRig, lock: str, code: str) -> str:
    """`lockgw-sim press` as a separate process: 'granted' or 'denied'."""
    proc = await asyncio.create_subprocess_exec(
        *sim_cli(), "press", "--control", str(rig.control), "--lock", lock, code,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    word = out.decode().strip()
    assert (proc.returncode, word) in ((0, "granted"), (1, "denied")), (proc.returncode, out, err)
    return word


async def test_walkthrough_real_simulator_process(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """Provisioning off/on, a door dropped from the keychain, SmartKey, revoke, access events."""
    async with serial_rig(tmp_path, broker, prefix, solo=True, process=True) as rig:
        p = rig.portal
        doors = ["101", "102", "pool", "gym"]
        j1 = job("key.upsert", key_body("k-1", 1, doors, code=PIN, allow=False))
        await p.publish(j1)
        assert (await p.wait_ack(j1["job_id"], 30))["result"] == "accepted"
        door = await rig.wait_door("k-1", "101", "pending_provisioning")
        assert door["reason"] == "provisioning_disabled"
        assert "gym" not in p.key_status("k-1")["doors"]
        assert await cli_press(rig, "lock-101", PIN) == "denied"
        assert await rig.slots("lock-101") == []

        await p.publish(job("key.upsert", key_body("k-1", 2, doors, code=PIN, allow=True)))
        for d in ("101", "102", "pool"):
            assert (await rig.wait_door("k-1", d, "provisioned"))["credentials"] == {
                "door_code": "provisioned"}
        for lock in ("lock-101", "lock-102", "lock-pool"):
            assert await cli_press(rig, lock, PIN) == "granted"
            assert len(await rig.slots(lock)) == 1
        assert await cli_press(rig, "lock-103", PIN) == "denied"  # not in the keychain

        # The gateway reads the audit log: access events name the key through the slot's ref.
        granted = await rig.wait_event("access", lock_id="lock-101", result="granted")
        assert granted["key_id"] == "k-1" and granted["credential"] == "door_code"
        assert granted["door_id"] == "101"
        denied = await rig.wait_event("access", lock_id="lock-101", result="denied")
        assert denied["key_id"] is None and denied["credential"] is None
        await rig.wait_event("access", lock_id="lock-pool", result="granted", key_id="k-1")

        # Door 102 leaves the keychain: removed there, still granted on the others.
        await p.publish(job("key.upsert", key_body("k-1", 3, ["101", "pool"], code=PIN)))
        await rig.wait_event("door_status", key_id="k-1", door_id="102", to="revoked")
        assert await cli_press(rig, "lock-102", PIN) == "denied"
        assert await rig.slots("lock-102") == []
        assert await cli_press(rig, "lock-101", PIN) == "granted"
        assert await cli_press(rig, "lock-pool", PIN) == "granted"

        # A SmartKey (and a PIN) on the lock at address 3.
        raw, b64 = smartkey_pub()
        await p.publish(job("key.upsert", key_body("k-sk", 1, ["103"], code="7654321", smartkey=b64)))
        door = await rig.wait_door("k-sk", "103", "provisioned")
        assert door["credentials"] == {"door_code": "provisioned", "smartkey": "provisioned"}
        assert await rig.present("lock-103", raw)
        assert not await rig.present("lock-101", raw)
        assert await cli_press(rig, "lock-103", "7654321") == "granted"
        sk = await rig.wait_event("access", lock_id="lock-103", result="granted", credential="smartkey")
        assert sk["key_id"] == "k-sk"

        # Revoke: every credential leaves every door.
        await p.publish(job("key.revoke", {"key_id": "k-1", "version": 4}))
        await rig.wait_cleared("k-1")
        for lock in ("lock-101", "lock-pool"):
            assert await cli_press(rig, lock, PIN) == "denied"
            assert await rig.slots(lock) == []
        states = [e["to"] for e in rig.events("door_status", key_id="k-1", door_id="101")]
        assert states[-2:] == ["revoking", "revoked"]
        log = rig.gw.log_text()
        assert PIN not in log and "7654321" not in log and b64 not in log
        for _t, payload, _r in p.messages:
            assert PIN.encode() not in payload and b64.encode() not in payload


async def test_checkin_rule_on_serial_locks(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """Require check-in: denied until checked in, granted right after, denied after checkout."""
    async with serial_rig(tmp_path, broker, prefix) as rig:
        p = rig.portal
        await p.publish(job("policy.update", {"version": 1, "require_checkin_before_provisioning": True,
                                              "revoke_on_checkout": True}))
        await p.publish(job("reservation.upsert", {"reservation_id": "R-1", "version": 1,
                                                   "status": "booked"}))
        await p.publish(job("key.upsert", key_body("k-2", 1, ["101", "103"], code="5551234",
                                                   reservation="R-1")))
        door = await rig.wait_door("k-2", "103", "pending_provisioning")
        assert door["reason"] == "reservation_not_checked_in"
        assert not await rig.press("lock-103", "5551234")
        assert await rig.slots("lock-103") == []

        await p.publish(job("reservation.upsert", {"reservation_id": "R-1", "version": 2,
                                                   "status": "checked_in", "channel": "front_desk"}))
        await rig.wait_door("k-2", "101", "provisioned")
        await rig.wait_door("k-2", "103", "provisioned")
        assert await rig.press("lock-101", "5551234")
        assert await rig.press("lock-103", "5551234")

        await p.publish(job("reservation.upsert", {"reservation_id": "R-1", "version": 3,
                                                   "status": "checked_out"}))
        await rig.wait_cleared("k-2")
        for lock in ("lock-101", "lock-103"):
            assert not await rig.press(lock, "5551234")
            assert await rig.slots(lock) == []


async def test_expiry_clears_the_slot(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """valid_until a few seconds ahead: granted before, then expired, slot cleared, denied."""
    async with serial_rig(tmp_path, broker, prefix) as rig:
        p = rig.portal
        until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=10)
        await p.publish(job("key.upsert", key_body("k-exp", 1, ["102"], code="246810",
                                                   valid_until=until)))
        await rig.wait_door("k-exp", "102", "provisioned")
        slots = await rig.slots("lock-102")
        assert [s["valid_until"] for s in slots] == [int(until.timestamp())]
        if time.time() < until.timestamp() - 1:  # the lock enforces the window itself
            assert await rig.press("lock-102", "246810")
        await rig.wait_event("door_status", timeout=45, key_id="k-exp", door_id="102", to="expired")
        await rig.wait_cleared("k-exp")
        assert await rig.slots("lock-102") == []
        assert not await rig.press("lock-102", "246810")


async def test_lock_reconcile_and_sync_time(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """lock.reconcile repairs a foreign, a missing and an altered slot; lock.sync_time sets the clock."""
    async with serial_rig(tmp_path, broker, prefix) as rig:
        p = rig.portal
        for n, code in enumerate(("111111", "222222", "333333"), 1):
            await p.publish(job("key.upsert", key_body(f"k-{n}", 1, ["101"], code=code)))
        for n in (1, 2, 3):
            await rig.wait_door(f"k-{n}", "101", "provisioned")
        desired = sorted((s["slot"], s["ref"], s["valid_from"], s["valid_until"], s["digest"])
                         for s in await rig.slots("lock-101"))
        assert len(desired) == 3
        lock = rig.model("lock-101")
        (s1, *_), (s2, *_), (s3, ref3, vf3, vu3, _d) = desired
        lock.set_credential(SlotWrite(20, CredentialType.PIN, b"\x99" * 16, 0, 2**32 - 1, b"909090"))
        lock.clear_credential(s1)
        _st, content = lock.get_credential(s3)
        assert content is not None
        lock.clear_credential(s3)
        lock.set_credential(SlotWrite(s3, CredentialType.PIN, bytes.fromhex(ref3), vf3, vu3 + 3600,
                                      b"333333"))
        assert await rig.press("lock-101", "909090")

        j = job("lock.reconcile", {"lock_id": "lock-101"})
        await p.publish(j, gateway_topic=True)
        assert (await p.wait_ack(j["job_id"], 30))["result"] == "accepted"
        ev = await rig.wait_event("lock_reconcile", lock_id="lock-101")
        assert ev["foreign_cleared"] == [20] and ev["missing"] == [s1] and ev["stale"] == [s3]
        assert s2 not in ev["stale"] + ev["missing"]

        async def repaired() -> bool:
            now = sorted((s["slot"], s["ref"], s["valid_from"], s["valid_until"], s["digest"])
                         for s in await rig.slots("lock-101"))
            return now == desired
        await rig.until(repaired, 30, "lock-101 holds exactly the desired credentials")
        assert not await rig.press("lock-101", "909090")
        for code in ("111111", "222222", "333333"):
            assert await rig.press("lock-101", code)
        for n in (1, 2, 3):
            await rig.wait_door(f"k-{n}", "101", "provisioned")

        # lock.sync_time: the clock drifted by 10 minutes behind the gateway's back (it checks
        # the clock only when it reads the lock info); the job sets it.
        await rig.ctl("lock-102", "skew", seconds=600)
        j = job("lock.sync_time", {"lock_id": "lock-102"})
        await p.publish(j, gateway_topic=True)
        await p.wait_ack(j["job_id"], 30)

        async def synced() -> bool:
            return abs(await rig.lock_clock("lock-102") - time.time()) < 5
        await rig.until(synced, 30, "lock-102 clock set")
        assert abs(await rig.lock_clock("lock-101") - time.time()) < 5


async def test_kill_9_between_lock_write_and_status(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """SIGKILL right after a lock took a write (before read-back and status): after a restart the
    credential is in exactly one slot, the door is provisioned and the PIN opens the door."""
    raw, b64 = smartkey_pub(11)
    async with serial_rig(tmp_path, broker, prefix, env={"LOCKGW_FAILPOINT": "lock_written"}) as rig:
        p = rig.portal
        j = job("key.upsert", key_body("k-1", 1, ["101"], code="909192", smartkey=b64))
        await p.publish(j)
        rc = await asyncio.to_thread(rig.gw.wait, 30)
        assert rc == -9, f"the failpoint did not fire (rc {rc})"
        assert (p.acks().get(j["job_id"]) or {}).get("result") in (None, "accepted")
        landed = await rig.slots("lock-101")
        assert len(landed) == 1  # the lock holds the first credential; nobody confirmed it
        assert (p.door("k-1", "101") or {}).get("state") != "provisioned"

        rig.env = {}
        rig.start_gateway()
        door = await rig.wait_door("k-1", "101", "provisioned")
        assert door["credentials"] == {"door_code": "provisioned", "smartkey": "provisioned"}
        held = await rig.slots("lock-101")
        assert len(held) == 2 and len({s["ref"] for s in held}) == 2
        assert landed[0] in held  # resumed by reading back, not written to a second slot
        assert await rig.press("lock-101", "909192")
        assert await rig.present("lock-101", raw)
        assert await rig.slots("lock-102") == []
