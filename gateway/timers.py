"""Wall-clock deadlines (valid_from, valid_until) per key: one timer for the earliest, no table scans."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable

# Wall clocks jump (NTP after a boot without RTC); never sleep longer than this before re-checking.
MAX_SLEEP_S = 30.0


class Deadlines:
    """A heap of (epoch seconds, key_id); firing a key re-evaluates it, so stale entries are harmless."""

    def __init__(self, fire: Callable[[list[str]], None], clock: Callable[[], float] = time.time) -> None:
        self._heap: list[tuple[float, str]] = []
        self._fire = fire
        self._clock = clock
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def arm(self, key_id: str, *epochs: float | None) -> None:
        """Fire `key_id` at each given time (None and past-by-far entries are ignored by the caller)."""
        earliest = self._heap[0][0] if self._heap else None
        for t in epochs:
            if t is not None:
                heapq.heappush(self._heap, (float(t), key_id))
        if self._heap and (earliest is None or self._heap[0][0] < earliest):
            self._changed.set()

    def due(self) -> list[str]:
        """Pop every key whose time has come."""
        now = self._clock()
        keys: list[str] = []
        while self._heap and self._heap[0][0] <= now:
            keys.append(heapq.heappop(self._heap)[1])
        return sorted(set(keys))

    async def run(self) -> None:
        """Sleep until the earliest deadline (or a new earlier one), fire, repeat."""
        while True:
            keys = self.due()
            if keys:
                self._fire(keys)
                continue
            delay = MAX_SLEEP_S
            if self._heap:
                delay = min(delay, max(0.0, self._heap[0][0] - self._clock()))
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=delay)
