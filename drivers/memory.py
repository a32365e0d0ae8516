"""In-process lock driver over the simulator's lock model: the core is tested and benchmarked with it."""

from __future__ import annotations

import asyncio
from collections import deque

from drivers.base import (
    Caps,
    DriverError,
    LockDriver,
    LockEvent,
    LockInfo,
    LockOfflineError,
    SlotContent,
    SlotWrite,
)
from drivers.locklink.status import Status, check_status
from drivers.sim.model import SimulatedLock


class MemoryDriver(LockDriver):
    """A LockDriver whose lock lives in this process; latency and failures can be injected."""

    transport = "memory"

    def __init__(self, lock_id: str, lock: SimulatedLock | None = None, *, latency_s: float = 0.0) -> None:
        super().__init__(lock_id)
        self.lock = lock or SimulatedLock(serial=f"MEM-{lock_id}"[:16])
        self.latency_s = latency_s
        self.offline = False  # every call raises LockOfflineError while set
        self._fail_next: deque[DriverError] = deque()
        self.calls: list[str] = []  # operation names, for tests that count lock I/O

    def fail_next(self, *errors: DriverError) -> None:
        """Make the next calls raise these errors, one per call."""
        self._fail_next.extend(errors)

    async def _op(self, name: str) -> None:
        self.calls.append(name)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.offline:
            raise LockOfflineError("simulated lock offline", lock_id=self.lock_id)
        if self._fail_next:
            raise self._fail_next.popleft()

    async def get_info(self) -> LockInfo:
        """Read the simulated lock's info."""
        await self._op("get_info")
        return self.lock.info()

    async def set_time(self, epoch: int) -> None:
        """Set the simulated lock's clock."""
        await self._op("set_time")
        check_status(self.lock.set_time(epoch), op="SET_TIME", lock_id=self.lock_id)

    async def set_credential(self, write: SlotWrite) -> None:
        """Write one slot."""
        await self._op("set_credential")
        check_status(self.lock.set_credential(write), op="SET_CREDENTIAL", lock_id=self.lock_id)

    async def clear_credential(self, slot: int) -> None:
        """Clear one slot."""
        await self._op("clear_credential")
        check_status(self.lock.clear_credential(slot), op="CLEAR_CREDENTIAL", lock_id=self.lock_id)

    async def get_credential(self, slot: int) -> SlotContent:
        """Read one slot back."""
        await self._op("get_credential")
        status, content = self.lock.get_credential(slot)
        check_status(status, op="GET_CREDENTIAL", lock_id=self.lock_id)
        if content is None:
            check_status(Status.INTERNAL, op="GET_CREDENTIAL", lock_id=self.lock_id)
        assert content is not None
        return content

    async def list_slots(self) -> tuple[int, frozenset[int]]:
        """Slot count and occupied slots."""
        await self._op("list_slots")
        return self.lock.list_slots()

    async def read_events(self, after: int, max_count: int = 32) -> list[LockEvent]:
        """Oldest events after `after`."""
        await self._op("read_events")
        if not self.lock.info().caps & Caps.EVENTS:
            return []
        return self.lock.read_events(after, max_count)
