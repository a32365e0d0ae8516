"""The reconciler: one worker per lock, fed by the engine's dirty keys; lock health and events out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from drivers.base import EventKind, LockDriver, LockEvent
from gateway.config import ProvisioningSection
from gateway.engine import Engine
from gateway.rules import DoorState
from gateway.secretbox import SecretBox
from gateway.status import StatusBook, dumps, rfc3339
from gateway.store import Store
from gateway.worker import LockWorker

log = logging.getLogger("lockgw.reconciler")

_ALARMS = {
    EventKind.TAMPER: "tamper",
    EventKind.LOW_BATTERY: "low_battery",
    EventKind.CLOCK_LOST: "clock_reset",
}
_RESUME_STATES = (DoorState.PROVISIONING, DoorState.REVOKING, DoorState.FAILED)


class Reconciler:
    """Owns the per-lock workers; everything that touches a lock goes through one of them."""

    def __init__(
        self,
        engine: Engine,
        box: SecretBox,
        locks: dict[str, tuple[str, LockDriver]],
        cfg: ProvisioningSection,
        now: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self.store: Store = engine.store
        self.book: StatusBook = engine.book
        self.box = box
        self.cfg = cfg
        self.now = now
        self.workers = {
            lock_id: LockWorker(self, lock_id, door_id, driver)
            for lock_id, (door_id, driver) in locks.items()
        }

    # --- inputs ---------------------------------------------------------------------------
    def wake(self, dirty: Iterable[tuple[str, str]]) -> None:
        """Queue (lock_id, key_id) pairs for convergence."""
        for lock_id, key_id in dirty:
            worker = self.workers.get(lock_id)
            if worker is not None:
                worker.mark(key_id)

    def request(self, lock_id: str | None, action: str) -> list[str]:
        """Queue a maintenance action on one lock or all; returns the lock ids it went to."""
        targets = list(self.workers) if lock_id is None else [lock_id]
        done = []
        for lid in targets:
            worker = self.workers.get(lid)
            if worker is not None:
                worker.request(action)
                done.append(lid)
        return done

    def resume_all(self) -> None:
        """After a start: queue every door left mid-write or mid-removal."""
        self.wake(self._unsettled(None))

    def _unsettled(self, door_id: str | None) -> set[tuple[str, str]]:
        pairs = set()
        for key_id, door in self.store.doors_in_states(tuple(str(s) for s in _RESUME_STATES)):
            lock_id = self.engine.doors.get(door)
            if lock_id is not None and (door_id is None or door == door_id):
                pairs.add((lock_id, key_id))
        return pairs

    def resume_lock(self, worker: LockWorker) -> None:
        """A lock came (back) online: retry everything it still owes."""
        for _lock, key_id in self._unsettled(worker.door_id):
            worker.dirty.add(key_id)

    @property
    def pending_writes(self) -> int:
        """Keys waiting for lock I/O across all locks."""
        return sum(w.pending for w in self.workers.values())

    @property
    def locks_online(self) -> int:
        """Locks whose last operation succeeded."""
        return sum(1 for w in self.workers.values() if w.state.online)

    # --- outputs --------------------------------------------------------------------------
    def stamp(self) -> str:
        """Now as RFC 3339."""
        return rfc3339(self.now())

    def settle(self, key_id: str, door_id: str, attempts: int | None) -> None:
        """After a successful convergence: recompute the door's state from what is confirmed."""
        with self.store.transaction():
            self.engine.evaluate(key_id, only_door=door_id, attempts=attempts)

    def alarm(self, lock_id: str, alarm: str, at: str | None = None) -> None:
        """Publish a lock_alarm event."""
        with self.store.transaction():
            self.store.enqueue(
                self.book.topics.events,
                dumps({"type": "lock_alarm", "lock_id": lock_id, "alarm": alarm,
                       "at": at or self.stamp()}),
            )

    def publish_health(self, w: LockWorker) -> None:
        """Queue the retained lock health (only when it changed)."""
        info = w.state.info
        payload = {
            "lock_id": w.lock_id, "door_id": w.door_id, "online": bool(w.state.online),
            "last_seen": w.state.last_seen,
            "battery": None if info is None else info.battery,
            "model": None if info is None else info.model,
            "firmware": None if info is None else info.firmware,
            "slots_total": None if info is None else info.slots,
            "slots_used": w.state.used, "clock_skew_s": w.state.skew,
            "transport": w.driver.transport,
        }
        last, mono = w.state.health, time.monotonic()
        if last is not None and {**last, "last_seen": None} == {**payload, "last_seen": None} and (
            mono - w.state.health_at < 60
        ):
            return  # only last_seen moved, within the minute: no retained churn
        w.state.health, w.state.health_at = payload, mono
        with self.store.transaction():
            self.store.enqueue(self.book.topics.lock(w.lock_id), dumps(payload), retain=True)

    async def publish_lock_event(self, w: LockWorker, ev: LockEvent) -> bool:
        """Translate one lock audit event to the contract; True when it says the clock was lost."""
        at = rfc3339(datetime.fromtimestamp(ev.time, UTC))
        if ev.kind in (EventKind.GRANTED, EventKind.DENIED):
            owner = self.store.ref_owner(ev.ref) if any(ev.ref) else None
            payload = {
                "type": "access", "lock_id": w.lock_id, "door_id": w.door_id,
                "result": "granted" if ev.kind == EventKind.GRANTED else "denied",
                "key_id": owner[0] if owner else None,
                "credential": owner[1] if owner else None, "at": at,
            }
            with self.store.transaction():
                self.store.enqueue(self.book.topics.events, dumps(payload))
            return False
        alarm = _ALARMS.get(EventKind(ev.kind)) if ev.kind in set(EventKind) else None
        if alarm is None:
            log.info("lock %s: event kind %s (not published)", w.lock_id, ev.kind)
            return False
        self.alarm(w.lock_id, alarm, at)
        return ev.kind == EventKind.CLOCK_LOST

    def report_reconcile(self, w: LockWorker, total: int, repaired: dict[str, list[int]]) -> None:
        """Publish what a lock.reconcile found and repaired."""
        log.info("lock %s reconcile: %s", w.lock_id, {k: len(v) for k, v in repaired.items()})
        with self.store.transaction():
            self.store.enqueue(
                self.book.topics.events,
                dumps({"type": "lock_reconcile", "lock_id": w.lock_id, "door_id": w.door_id,
                       "slots_total": total, "foreign_cleared": repaired["foreign"],
                       "missing": repaired["missing"], "stale": repaired["stale"],
                       "at": self.stamp()}),
            )

    async def run(self) -> None:
        """Run every worker until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for w in self.workers.values():
                tg.create_task(w.run(), name=f"lock-{w.lock_id}")

    async def close(self) -> None:
        """Close every driver."""
        for w in self.workers.values():
            try:
                await w.driver.close()
            except Exception:  # closing is best effort at shutdown
                log.exception("lock %s: close failed", w.lock_id)
