"""One worker per lock: converges what the lock holds to the desired state, one operation at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from drivers.base import (
    Caps,
    CredentialType,
    DriverError,
    LockDriver,
    LockFaultError,
    LockFullError,
    LockInfo,
    Reason,
    SlotWrite,
)
from gateway.engine import window
from gateway.failpoints import failpoint
from gateway.rules import DoorState, write_due
from gateway.store import SlotRow

if TYPE_CHECKING:
    from gateway.reconciler import Reconciler

log = logging.getLogger("lockgw.worker")

CRED_TYPES = {"door_code": CredentialType.PIN, "smartkey": CredentialType.SMARTKEY}


@dataclass
class Breaker:
    """Pauses a lock after `threshold` consecutive transport failures, for `cooldown` seconds."""

    threshold: int
    cooldown: float
    failures: int = 0
    open_until: float = 0.0

    def is_open(self, now: float) -> bool:
        """Whether operations are paused."""
        return now < self.open_until

    def success(self) -> bool:
        """Record a success; True when this closes a tripped breaker."""
        tripped = self.failures >= self.threshold
        self.failures = 0
        self.open_until = 0.0
        return tripped

    def failure(self, now: float) -> bool:
        """Record a failure; True when this trips the breaker."""
        self.failures += 1
        if self.failures >= self.threshold:
            self.open_until = now + self.cooldown
            return self.failures == self.threshold
        return False


@dataclass
class _Retry:
    attempts: int = 0
    due: float = 0.0


@dataclass
class WorkerState:
    """What the worker keeps in memory about its lock."""

    info: LockInfo | None = None
    online: bool | None = None
    last_seen: str | None = None
    skew: int | None = None
    used: int | None = None
    health: dict[str, Any] | None = None  # last published lock health
    health_at: float = 0.0
    retries: dict[str, _Retry] = field(default_factory=dict)


class LockWorker:
    """Serialises every operation on one lock; failures back off per key and trip a breaker."""

    def __init__(self, rec: Reconciler, lock_id: str, door_id: str, driver: LockDriver) -> None:
        self.rec = rec
        self.lock_id = lock_id
        self.door_id = door_id
        self.driver = driver
        cfg = rec.cfg
        self.breaker = Breaker(cfg.breaker_threshold, cfg.breaker_cooldown_s)
        self.state = WorkerState()
        self.dirty: set[str] = set()
        self.actions: list[str] = []  # "reconcile", "sync_time"
        self.wakeup = asyncio.Event()
        self.next_events = 0.0
        self.info_failures = 0  # consecutive failed reads of the lock's info
        self.info_hold = 0.0  # monotonic time before which the info read is not tried again
        self.last_event_id = rec.store.event_cursor(lock_id)

    # --- scheduling -----------------------------------------------------------------------
    def mark(self, key_id: str) -> None:
        """Queue a key for convergence now (a fresh input resets its backoff)."""
        self.dirty.add(key_id)
        self.state.retries.pop(key_id, None)
        self.wakeup.set()

    def request(self, action: str) -> None:
        """Queue a maintenance action."""
        if action not in self.actions:
            self.actions.append(action)
        self.wakeup.set()

    @property
    def pending(self) -> int:
        """Keys waiting for lock I/O."""
        return len(self.dirty | set(self.state.retries))

    def _wake_at(self, now: float) -> float:
        """When the next round is due (monotonic seconds)."""
        if self.breaker.is_open(now):
            return self.breaker.open_until
        if self.dirty or self.actions or self.state.info is None:
            at = now  # work queued, or the info must be (re-)read, e.g. after a clock loss
        else:
            at = min([r.due for r in self.state.retries.values()] + [self.next_events])
        if self.state.info is None:
            at = max(at, self.info_hold)  # back off a lock we cannot talk to
        return at

    async def run(self) -> None:
        """The worker loop; never returns until cancelled."""
        while True:
            now = time.monotonic()
            delay = self._wake_at(now) - now
            if delay > 0:
                self.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), timeout=min(delay, 3600))
                continue
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not kill the lock's worker
                log.exception("lock %s: worker round failed", self.lock_id)
                await asyncio.sleep(1.0)

    async def _round(self) -> None:
        """One pass: session/info, maintenance actions, due keys, events."""
        if not await self._ensure_info():
            return
        while self.actions:
            action = self.actions.pop(0)
            if not await self._guard(self._action(action)):
                self.actions.insert(0, action)
                return
        now = time.monotonic()
        due = set(self.dirty) | {k for k, r in self.state.retries.items() if r.due <= now}
        self.dirty.clear()
        for key_id in sorted(due):
            if self.breaker.is_open(time.monotonic()):
                self.dirty.add(key_id)
                continue
            await self._converge(key_id)
        # Events ride on a session we had anyway; otherwise at most every events_interval_s
        # (battery-powered locks must not be polled faster than configured).
        if due or time.monotonic() >= self.next_events:
            await self._guard(self._read_events())
            self.next_events = time.monotonic() + self.rec.cfg.events_interval_s

    async def _guard(self, coro: Any) -> bool:
        """Run one lock operation group, feeding the breaker; False on a transport failure."""
        try:
            await coro
        except DriverError as exc:
            self._failure(exc)
            return False
        self._success()
        return True

    def _success(self) -> None:
        if self.breaker.success() or self.state.online is not True:
            self.state.online = True
            self.rec.alarm(self.lock_id, "online")
            self.rec.resume_lock(self)
        self.state.last_seen = self.rec.stamp()
        self.rec.publish_health(self)

    def _failure(self, exc: DriverError) -> None:
        if exc.reason != Reason.LOCK_OFFLINE:
            return
        if self.breaker.failure(time.monotonic()) or (
            self.state.online is not False and self.breaker.failures >= self.breaker.threshold
        ):
            log.warning("lock %s: offline, pausing for %.0fs", self.lock_id, self.breaker.cooldown)
            self.state.online = False
            self.state.info = None  # re-read after the pause: the lock may have rebooted
            self.rec.alarm(self.lock_id, "offline")
            self.rec.publish_health(self)

    # --- lock info, clock, events ---------------------------------------------------------
    async def _ensure_info(self) -> bool:
        if self.state.info is not None:
            return True
        try:
            await self._refresh_info()
        except DriverError as exc:
            self._failure(exc)
            # Keys queued for this lock spend an attempt as well: a lock that never answers, or
            # never authenticates, must not leave them `provisioning` without a reason.
            owed = {str(DoorState.PROVISIONING), str(DoorState.REVOKING)}
            for key_id in sorted(self.dirty):
                rows = self.rec.store.doors_of_key(key_id)
                if any(r.door_id == self.door_id and r.state in owed for r in rows):
                    self.dirty.discard(key_id)
                    self.state.retries.setdefault(key_id, _Retry())
            self._charge_due(exc)
            self.info_failures += 1
            self.info_hold = time.monotonic() + self._backoff(self.info_failures)
            return False
        self.info_failures = 0
        self._success()
        return True

    def _charge_due(self, error: DriverError) -> None:
        """The lock cannot be reached at all: each key whose retry is due spends an attempt.

        Without this a key that failed once would wait in `provisioning` for as long as the lock
        stays away, never reaching `failed` after max_attempts.
        """
        store = self.rec.store
        now = time.monotonic()
        for key_id, retry in list(self.state.retries.items()):
            if retry.due > now:
                continue
            key = store.get_key(key_id)
            if key is None:
                self.state.retries.pop(key_id, None)
                continue
            intent = self.rec.engine.intent(key, self.door_id, self.rec.now())
            self._retry_or_fail(key, error, dict.fromkeys(key.creds, "failed"), intent.present)

    async def _refresh_info(self) -> None:
        info = await self.driver.get_info()
        now = int(self.rec.now().timestamp())
        skew = info.clock - now
        if abs(skew) > self.rec.cfg.clock_skew_max_s:
            log.info("lock %s: clock off by %ds, setting it", self.lock_id, skew)
            await self.driver.set_time(int(self.rec.now().timestamp()))
            skew = 0
        self.state.info = info
        self.state.skew = skew
        _total, used = await self.driver.list_slots()
        self.state.used = len(used)

    async def _action(self, action: str) -> None:
        if action == "sync_time":
            await self.driver.set_time(int(self.rec.now().timestamp()))
            self.state.info = None
            await self._refresh_info()
        elif action == "reconcile":
            await self._reconcile()

    async def _read_events(self) -> None:
        info = self.state.info
        if info is None or not info.caps & Caps.EVENTS:
            return
        batch = min(32, self.driver.max_events_per_read)
        for _ in range(16):  # bounded: at most 16 batches per visit
            events = await self.driver.read_events(self.last_event_id, batch)
            for ev in events:
                if await self.rec.publish_lock_event(self, ev):
                    self.state.info = None  # clock lost: re-read info and set the clock
                self.last_event_id = max(self.last_event_id, ev.id)
            if events:
                self.rec.store.set_event_cursor(self.lock_id, self.last_event_id)
            if len(events) < batch:  # a short batch: the lock has nothing more
                break

    # --- convergence ----------------------------------------------------------------------
    async def _converge(self, key_id: str) -> None:
        """Bring one key's credentials on this lock to the desired state, confirming each step."""
        rec = self.rec
        store = rec.store
        key = store.get_key(key_id)
        info = self.state.info
        if key is None or info is None:
            return
        now = rec.now()
        intent = rec.engine.intent(key, self.door_id, now)
        present = intent.present and write_due(key.facts, now, bool(info.caps & Caps.SCHEDULE))
        secrets = (key.secrets or {}) if present else {}
        span = window(key.facts)
        held = store.slots_of(self.lock_id, key_id)
        results: dict[str, str] = {}
        error: DriverError | None = None
        for cred, old in sorted(held.items()):
            if cred in secrets:
                continue
            try:
                await self._clear(old)
                results[cred] = "cleared"
            except DriverError as exc:
                error = error or exc
                results[cred] = "failed"
                if exc.reason == Reason.LOCK_OFFLINE:
                    break
        for cred, secret in sorted(secrets.items()):
            if error is not None and error.reason == Reason.LOCK_OFFLINE:
                break
            row = held.get(cred)
            if rec.engine.slot_holds(row, secret, span):
                results[cred] = "held"  # confirmed earlier; lock.reconcile re-checks on demand
                continue
            ref = rec.box.credential_ref(key_id, cred)
            write = SlotWrite(0, CRED_TYPES[cred], ref, *span, secret)
            try:
                await self._write(key_id, cred, write, row)
                results[cred] = "ok"
            except DriverError as exc:
                error = error or exc
                results[cred] = "failed"
        if error is None:
            self._success()
            retry = self.state.retries.pop(key_id, None)
            wrote = any(r == "ok" for r in results.values())
            rec.settle(key_id, self.door_id, (retry.attempts if retry else 0) + 1 if wrote else None)
            return
        self._failure(error)
        self._retry_or_fail(key, error, results, intent.present)

    def _retry_or_fail(
        self, key: Any, error: DriverError, results: dict[str, str], present: bool
    ) -> None:
        cfg = self.rec.cfg
        retry = self.state.retries.setdefault(key.key_id, _Retry())
        retry.attempts += 1
        give_up = not error.retryable or retry.attempts >= cfg.max_attempts
        busy = DoorState.PROVISIONING if present else DoorState.REVOKING
        state = DoorState.FAILED if give_up else busy
        creds: dict[str, str] = {
            c: (DoorState.FAILED if give_up and r == "failed" else
                busy if r == "failed" else
                DoorState.PROVISIONED if r in ("ok", "held") else DoorState.REVOKED)
            for c, r in results.items()
        }
        for c in key.creds:
            creds.setdefault(c, str(busy))
        self.rec.book.set_door(
            key.key_id, self.door_id, key.version, state, error.reason.value,
            {c: str(s) for c, s in creds.items()}, retry.attempts,
        )
        log.warning(
            "lock %s key %s: %s (attempt %d)%s", self.lock_id, key.key_id, error.reason.value,
            retry.attempts, ", giving up" if give_up and present else "",
        )
        if give_up and present:
            self.state.retries.pop(key.key_id, None)
            return
        # A removal is never abandoned: a former guest's code must leave the lock.
        jitter = random.uniform(0.5, 1.0)  # no thundering herd of retries
        retry.due = time.monotonic() + self._backoff(retry.attempts) * jitter

    def _backoff(self, attempts: int) -> float:
        """Exponential backoff after `attempts` failures (exponent capped: removals retry forever)."""
        cfg = self.rec.cfg
        return min(cfg.backoff_max_s, cfg.backoff_initial_s * 2.0 ** min(attempts - 1, 30))

    async def _write(self, key_id: str, cred: str, write: SlotWrite, row: SlotRow | None) -> None:
        store = self.rec.store
        info = self.state.info
        assert info is not None
        if row is None:
            # The new row is unconfirmed: a crash after the write below resumes with a read-back.
            with store.transaction():
                slot = store.allocate_slot(
                    self.lock_id, key_id, cred, write.ref, int(write.type), info.slots
                )
            if slot is None:
                raise LockFullError("no free slot", lock_id=self.lock_id)
            write = replace(write, slot=slot)
        elif row.confirmed:
            write = replace(write, slot=row.slot)
            with store.transaction():  # in flight: a resume reads back before trusting it
                store.mark_slot(self.lock_id, row.slot, confirmed=False)
        else:
            # Resume: a write may have landed before a crash; read before writing again.
            write = replace(write, slot=row.slot)
            if (await self.driver.get_credential(row.slot)).matches(write):
                self._confirm(write)
                return
        await self.driver.set_credential(write)
        failpoint("lock_written")  # tests: crash after the lock took it, before read-back/confirm
        content = await self.driver.get_credential(write.slot)
        if not content.matches(write):
            raise LockFaultError("read-back does not match the write", lock_id=self.lock_id)
        self._confirm(write)

    def _confirm(self, write: SlotWrite) -> None:
        with self.rec.store.transaction():
            self.rec.store.mark_slot(
                self.lock_id, write.slot, confirmed=True, digest=self.rec.box.fingerprint(write.secret),
                valid_from=write.valid_from, valid_until=write.valid_until,
            )

    async def _clear(self, row: SlotRow) -> None:
        store = self.rec.store
        slot = row.slot
        if row.confirmed:
            # Were the key wanted back after a crash mid-clear, a confirmed row would be trusted.
            with store.transaction():
                store.mark_slot(self.lock_id, slot, confirmed=False)
        await self.driver.clear_credential(slot)
        content = await self.driver.get_credential(slot)
        if content.occupied and content.ref == row.ref:
            # The lock said OK but kept the credential: never report it removed.
            raise LockFaultError("lock kept a cleared credential", lock_id=self.lock_id)
        with store.transaction():
            store.free_slot(self.lock_id, slot)

    # --- lock.reconcile -------------------------------------------------------------------
    async def _reconcile(self) -> None:
        """Read back every slot; clear foreign ones, mark missing or stale ones for rewrite."""
        store = self.rec.store
        ours = store.lock_slots(self.lock_id)
        total, occupied = await self.driver.list_slots()
        repaired: dict[str, list[int]] = {"foreign": [], "missing": [], "stale": []}
        for slot in sorted(occupied):
            row = ours.get(slot)
            content = await self.driver.get_credential(slot)
            if row is None:
                await self.driver.clear_credential(slot)
                repaired["foreign"].append(slot)
            elif not row.confirmed or content.ref != row.ref or (
                self.rec.box.fingerprint_digest(content.digest) != row.digest) or (
                content.valid_from, content.valid_until) != (row.valid_from, row.valid_until):
                repaired["stale"].append(slot)
                with store.transaction():
                    store.mark_slot(self.lock_id, slot, confirmed=False)
        for slot in ours:
            if slot not in occupied:
                repaired["missing"].append(slot)
                with store.transaction():
                    store.mark_slot(self.lock_id, slot, confirmed=False)
        self.state.used = len(occupied) - len(repaired["foreign"])
        keys = set(store.keys_for_door(self.door_id)) | {r.key_id for r in ours.values()}
        self.rec.report_reconcile(self, total, repaired)
        for key_id in keys:
            self.dirty.add(key_id)
