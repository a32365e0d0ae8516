"""Issue #3: lock faults end to end — the daemon as a process against simulated LockLink locks on
ptys (three on one multi-drop bus), faults injected through the simulator's control socket."""

from __future__ import annotations

import time
from pathlib import Path

from tests.harness import Broker, job, key_body
from tests.integration.serial_rig import SerialRig, serial_rig

BUS = ("101", "102", "103")


async def test_dropped_responses_still_provision(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """A lock that loses ~30% of its answers is provisioned through retries (same seq, new ctr)."""
    async def faulty(rig: SerialRig) -> None:
        await rig.fault("lock-101", drop_rate=0.3)
        await rig.fault("lock-103", drop_rate=0.3)

    async with serial_rig(tmp_path, broker, prefix, before=faulty) as rig:
        p = rig.portal
        for n in range(1, 7):
            await p.publish(job("key.upsert", key_body(f"k-{n}", 1, list(BUS), code=f"70{n}0{n}0")))
        for n in range(1, 7):
            for d in BUS:
                await rig.wait_door(f"k-{n}", d, "provisioned", 60)
        for lock in ("lock-101", "lock-102", "lock-103"):
            assert len(await rig.slots(lock)) == 6  # retried writes never used a second slot
            for n in range(1, 7):
                assert await rig.press(lock, f"70{n}0{n}0")
        stats = [(await rig.ctl(lock, "info"))["stats"] for lock in ("lock-101", "lock-103")]
        assert sum(s["dropped"] for s in stats) > 0, stats


async def test_ignored_clear_is_never_reported_revoked(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """A lock that acks CLEAR but keeps the credential: read-back catches it until the fault goes."""
    async with serial_rig(tmp_path, broker, prefix) as rig:
        p = rig.portal
        await p.publish(job("key.upsert", key_body("k-1", 1, ["101", "102"], code="135790")))
        await rig.wait_door("k-1", "101", "provisioned")
        await rig.wait_door("k-1", "102", "provisioned")
        await rig.fault("lock-101", ignore_clear=True)
        await p.publish(job("key.revoke", {"key_id": "k-1", "version": 2}))
        await rig.wait_event("door_status", key_id="k-1", door_id="102", to="revoked")

        def stuck() -> dict[str, object] | None:
            d = p.door("k-1", "101")
            ok = d is not None and d["state"] in ("revoking", "failed") and d["reason"] == "lock_error"
            return d if ok else None
        door = await p.wait_for(stuck, 30, "101 stuck revoking/failed with lock_error")
        assert door["credentials"]["door_code"] in ("revoking", "failed")
        await p.wait_for(lambda: (p.door("k-1", "101") or {}).get("attempts", 0) >= 3, 30, "retries")
        assert not rig.events("door_status", key_id="k-1", door_id="101", to="revoked")
        assert await rig.press("lock-101", "135790")  # the lock really still opens for it
        assert not await rig.press("lock-102", "135790")

        await rig.fault("lock-101", ignore_clear=False)
        await rig.wait_event("door_status", key_id="k-1", door_id="101", to="revoked")
        await rig.wait_cleared("k-1")
        assert await rig.slots("lock-101") == []
        assert not await rig.press("lock-101", "135790")


async def test_reboot_resessions_and_sets_clock(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """A rebooted lock (session and clock lost) is re-handshaken, its clock set at once when the
    gateway learns of the reboot (not a whole events interval later), and it keeps working."""
    async with serial_rig(tmp_path, broker, prefix, provisioning={"events_interval_s": 120}) as rig:
        p = rig.portal
        await p.publish(job("key.upsert", key_body("k-1", 1, ["101", "102"], code="864200")))
        await rig.wait_door("k-1", "101", "provisioned")
        assert await rig.press("lock-101", "864200")
        hellos = (await rig.ctl("lock-101", "info"))["stats"]["hellos"]
        await rig.ctl("lock-101", "reboot")
        assert abs(await rig.lock_clock("lock-101") - time.time()) > 3600
        assert not await rig.press("lock-101", "864200")  # clock at 0: before valid_from

        # New work: written through a fresh session; reading the log on the way finds the reboot.
        await p.publish(job("key.upsert", key_body("k-2", 1, ["101"], code="975310")))
        await rig.wait_door("k-2", "101", "provisioned")
        assert (await rig.ctl("lock-101", "info"))["stats"]["hellos"] > hellos
        await rig.wait_event("lock_alarm", lock_id="lock-101", alarm="clock_reset")

        async def clock_set() -> bool:
            return abs(await rig.lock_clock("lock-101") - time.time()) < 5
        await rig.until(clock_set, 30, "lock-101 clock set after the reboot")
        health = await rig.wait_health("lock-101", lambda h: h["online"])
        assert health["clock_skew_s"] is not None and abs(health["clock_skew_s"]) <= 5
        assert await rig.press("lock-101", "864200")
        assert await rig.press("lock-101", "975310")
        assert len(await rig.slots("lock-101")) == 2
        assert not rig.events("lock_alarm", lock_id="lock-102", alarm="clock_reset")


async def test_clock_skew_at_start_is_corrected(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """A lock whose clock is 2 minutes off when the gateway starts gets its clock set."""
    async def skew(rig: SerialRig) -> None:
        await rig.ctl("lock-102", "skew", seconds=120)

    async with serial_rig(tmp_path, broker, prefix, before=skew) as rig:
        async def clock_set() -> bool:
            return abs(await rig.lock_clock("lock-102") - time.time()) < 5
        await rig.until(clock_set, 30, "lock-102 clock set")
        health = await rig.wait_health("lock-102", lambda h: h["clock_skew_s"] is not None)
        assert abs(health["clock_skew_s"]) <= 5


async def test_failure_reasons(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """full storage → lock_full; PIN shorter than pin_min → code_not_supported; same PIN twice →
    duplicate_code. Each is final (failed) and leaves the other doors alone."""
    async def full(rig: SerialRig) -> None:
        await rig.fault("lock-103", full=True)

    async with serial_rig(tmp_path, broker, prefix, before=full,
                          overrides={"lock-101": {"pin_min": 6}}) as rig:
        p = rig.portal
        await p.publish(job("key.upsert", key_body("k-full", 1, ["102", "103"], code="121212")))
        door = await rig.wait_door("k-full", "103", "failed")
        assert door["reason"] == "lock_full"
        await rig.wait_door("k-full", "102", "provisioned")

        await p.publish(job("key.upsert", key_body("k-short", 1, ["101", "102"], code="1234")))
        door = await rig.wait_door("k-short", "101", "failed")
        assert door["reason"] == "code_not_supported"
        await rig.wait_door("k-short", "102", "provisioned")
        assert not await rig.press("lock-101", "1234")
        assert await rig.press("lock-102", "1234")

        await p.publish(job("key.upsert", key_body("k-a", 1, ["102"], code="565656")))
        await rig.wait_door("k-a", "102", "provisioned")
        await p.publish(job("key.upsert", key_body("k-b", 1, ["102"], code="565656")))
        door = await rig.wait_door("k-b", "102", "failed")
        assert door["reason"] == "duplicate_code"
        assert len(await rig.slots("lock-102")) == 3  # k-full, k-short, k-a
        assert await rig.slots("lock-101") == [] and await rig.slots("lock-103") == []
        await rig.wait_door("k-a", "102", "provisioned")


async def test_wrong_lock_key(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """A lock that cannot prove the configured key → failed/lock_auth_failed; its bus keeps working."""
    async def wrong(rig: SerialRig) -> None:
        await rig.fault("lock-102", wrong_key=True)

    async with serial_rig(tmp_path, broker, prefix, before=wrong, wait_online=False) as rig:
        p = rig.portal
        await p.publish(job("key.upsert", key_body("k-1", 1, list(BUS), code="314159")))
        door = await rig.wait_door("k-1", "102", "failed")
        assert door["reason"] == "lock_auth_failed"
        await rig.wait_door("k-1", "101", "provisioned")
        await rig.wait_door("k-1", "103", "provisioned")
        assert not await rig.press("lock-102", "314159")
        assert await rig.press("lock-101", "314159")
        hellos = (await rig.ctl("lock-102", "info"))["stats"]["hellos"]
        await p.publish(job("key.upsert", key_body("k-2", 1, ["101"], code="271828")))
        await rig.wait_door("k-2", "101", "provisioned")
        # no busy loop against a lock that fails authentication
        assert (await rig.ctl("lock-102", "info"))["stats"]["hellos"] - hellos < 20


async def test_silent_lock_on_shared_bus(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """A lock that stops answering goes offline; the other locks on its bus keep being provisioned."""
    async with serial_rig(tmp_path, broker, prefix, serial={"response_timeout_s": 0.5, "tries": 2},
                          provisioning={"breaker_cooldown_s": 3}) as rig:
        p = rig.portal
        await p.publish(job("key.upsert", key_body("k-1", 1, list(BUS), code="600601")))
        for d in BUS:
            await rig.wait_door("k-1", d, "provisioned")
        await rig.fault("lock-102", drop_rate=1.0)
        for n in range(2, 5):
            await p.publish(job("key.upsert", key_body(f"k-{n}", 1, list(BUS), code=f"60{n}60{n}")))
        await rig.wait_event("lock_alarm", lock_id="lock-102", alarm="offline")
        await rig.wait_health("lock-102", lambda h: not h["online"])
        for n in range(2, 5):
            await rig.wait_door(f"k-{n}", "101", "provisioned", 60)
            await rig.wait_door(f"k-{n}", "103", "provisioned", 60)
            assert await rig.press("lock-103", f"60{n}60{n}")
            door = p.door(f"k-{n}", "102")
            assert door is not None and door["state"] in ("provisioning", "failed"), door
        assert rig.health("lock-101")["online"] and rig.health("lock-103")["online"]
        def offline_reason() -> bool:
            return any((p.door(f"k-{n}", "102") or {}).get("reason") == "lock_offline" for n in (2, 3, 4))
        await p.wait_for(offline_reason, 30, "a door of lock-102 shows lock_offline")

        # It answers again: back online, and what it owes is written.
        await rig.fault("lock-102", drop_rate=0.0)
        await rig.wait_event("lock_alarm", lock_id="lock-102", alarm="online", after=1, timeout=45)
        for n in range(2, 5):
            await rig.wait_door(f"k-{n}", "102", "provisioned", 60)
        assert len(await rig.slots("lock-102")) == 4
        assert await rig.press("lock-102", "604604")


async def test_event_backlog_is_read_in_one_visit(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """More events than one LockLink answer holds (18) are all read in the same visit."""

    async def backlog(rig: SerialRig) -> None:
        for _ in range(40):
            assert not rig.model("lock-101").press_pin("0000")

    # An hour between polls: only the first visit, at start, can read them.
    async with serial_rig(tmp_path, broker, prefix, before=backlog,
                          provisioning={"events_interval_s": 3600}) as rig:
        await rig.portal.wait_for(
            lambda: len(rig.events("access", lock_id="lock-101", result="denied")) >= 40, 30,
            "40 denied access events")
