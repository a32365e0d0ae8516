"""Fixtures for driver tests: a private D-Bus system bus and a simulated BlueZ on it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from drivers.sim.bluez import SimBlueZ
from drivers.sim.bluez_bus import dbus_daemon_path, private_system_bus


@pytest.fixture
async def dbus_system_bus() -> AsyncIterator[str]:
    """A throw-away dbus-daemon; DBUS_SYSTEM_BUS_ADDRESS points at it for the test."""
    if dbus_daemon_path() is None:
        if os.environ.get("CI"):
            pytest.fail("dbus-daemon not installed (scripts/bootstrap installs it)")
        pytest.skip("dbus-daemon not installed")
    async with private_system_bus() as address:
        yield address


@pytest.fixture
async def sim_bluez(dbus_system_bus: str) -> AsyncIterator[SimBlueZ]:
    """A started SimBlueZ with one adapter, hci0, on the private system bus."""
    sim = SimBlueZ(adv_interval=0.01)
    sim.add_adapter("hci0")
    await sim.start(dbus_system_bus)
    try:
        yield sim
    finally:
        await sim.stop()
