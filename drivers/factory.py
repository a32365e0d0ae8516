"""Builds each configured lock's driver from its [[locks]] entry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.base import LockDriver
from drivers.memory import MemoryDriver
from drivers.sim.model import SimulatedLock

if TYPE_CHECKING:
    from gateway.config import Settings


def make_drivers(settings: Settings) -> dict[str, LockDriver]:
    """lock_id -> driver for every configured lock (serial locks sharing a port share one bus)."""
    out: dict[str, LockDriver] = {}
    for lock in settings.locks:
        if lock.driver == "memory":
            sim = SimulatedLock(
                serial=f"MEM-{lock.id}"[:16], slots=lock.slots, pin_min=lock.pin_min,
                pin_max=lock.pin_max,
            )
            if not lock.schedule:
                from drivers.base import Caps

                sim.caps = sim.caps & ~Caps.SCHEDULE
            out[lock.id] = MemoryDriver(lock.id, sim, latency_s=lock.latency_s)
    serial_locks = [lock for lock in settings.locks if lock.driver == "serial"]
    if serial_locks:
        from drivers.locklink.serial import make_serial_drivers

        out.update(make_serial_drivers(serial_locks, settings.serial))
    ble_locks = [lock for lock in settings.locks if lock.driver == "ble"]
    if ble_locks:
        from drivers.locklink.ble import make_ble_drivers

        out.update(make_ble_drivers(ble_locks, settings.ble))
    return out
