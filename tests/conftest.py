"""Fixtures shared by every test: a real Mosquitto per test, and an in-process gateway on it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers.factory import make_drivers
from drivers.memory import MemoryDriver
from drivers.sim.model import SimulatedLock
from gateway.config import load_settings
from gateway.service import Gateway
from tests.harness import Broker, Portal, gateway_toml, portal


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A private Mosquitto on a free port, stopped after the test."""
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def prefix() -> str:
    """A topic prefix of the test's own."""
    return f"t{uuid.uuid4().hex[:8]}/v1"


@dataclass
class Rig:
    """A running in-process gateway with memory locks, and the portal client."""

    gw: Gateway
    portal: Portal
    locks: dict[str, SimulatedLock]
    drivers: dict[str, MemoryDriver]
    task: asyncio.Task[None]
    config: Path


DEFAULT_LOCKS = [
    {"id": "lock-101", "door_id": "101", "driver": "memory"},
    {"id": "lock-pool", "door_id": "pool", "driver": "memory"},
]


@contextlib.asynccontextmanager
async def make_rig(tmp_path: Path, broker: Broker, prefix: str,
                   locks: list[dict[str, Any]] | None = None, extra: str = "",
                   sims: dict[str, SimulatedLock] | None = None) -> AsyncIterator[Rig]:
    """Start a gateway in this event loop (real broker, real SQLite, memory locks)."""
    config = tmp_path / "gw.toml"
    config.write_text(gateway_toml(tmp_path / "state", broker.port, prefix, locks or DEFAULT_LOCKS, extra))
    settings = load_settings(config)
    sims = dict(sims or {})
    # The daemon's own factory (it honours slots, pin rules, schedule); tests may bring a lock.
    drivers: dict[str, MemoryDriver] = {}
    for lock_id, driver in make_drivers(settings).items():
        assert isinstance(driver, MemoryDriver), "the in-process rig takes memory locks only"
        drivers[lock_id] = MemoryDriver(lock_id, sims[lock_id]) if lock_id in sims else driver
        sims[lock_id] = drivers[lock_id].lock
    async with portal(broker.port, prefix) as p:
        gw = Gateway(settings, drivers=dict(drivers))
        task = asyncio.create_task(gw.run())
        await p.wait_for(lambda: p.retained.get(f"{p.gwroot}/state"), 10, "gateway online")
        try:
            yield Rig(gw, p, sims, drivers, task, config)
        finally:
            gw.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)


@pytest.fixture
async def rig(tmp_path: Path, broker: Broker, prefix: str) -> AsyncIterator[Rig]:
    """The default rig: doors 101 and pool on memory locks."""
    async with make_rig(tmp_path, broker, prefix) as r:
        yield r
