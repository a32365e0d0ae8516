"""Wires store, engine, reconciler, timers and the broker link into one TaskGroup; signals; sd_notify."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version

from drivers.base import LockDriver
from drivers.factory import make_drivers
from gateway import sdnotify
from gateway.config import Settings
from gateway.engine import MAINTENANCE, Engine
from gateway.jws import JobVerifier
from gateway.mqtt import MqttLink
from gateway.reconciler import Reconciler
from gateway.rules import DoorState
from gateway.secretbox import SecretBox, load_or_create_key, resolve_key_path
from gateway.status import StatusBook, dumps, rfc3339
from gateway.store import Store
from gateway.timers import Deadlines
from gateway.topics import Topics

log = logging.getLogger("lockgw")

try:
    VERSION = version("lock-gateway")
except PackageNotFoundError:  # running from a source tree
    VERSION = "0.0.0"

_SETTLED = (str(DoorState.REVOKED), str(DoorState.EXPIRED))


def utcnow() -> datetime:
    """The wall clock in UTC."""
    return datetime.now(UTC)


class Gateway:
    """The daemon: build every part from the settings, run until stop(), shut down cleanly."""

    def __init__(
        self,
        settings: Settings,
        *,
        drivers: dict[str, LockDriver] | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.now = now
        gw = settings.gateway
        self.boot_id = uuid.uuid4().hex
        self.started = now()
        self.started_mono = time.monotonic()
        key_path = resolve_key_path(settings.security.secret_key_file, gw.state_dir)
        self.box = SecretBox(load_or_create_key(key_path))
        self.store = Store(gw.state_dir / "gateway.db", self.box)
        self.topics = Topics(settings.mqtt.topic_prefix, gw.site_id, gw.gateway_id)
        self.book = StatusBook(self.store, self.topics, gw.gateway_id, now)
        doors = {lock.door_id: lock.id for lock in settings.locks}
        sec = settings.security
        self.engine = Engine(
            self.store, self.book, doors, gateway_id=gw.gateway_id,
            max_payload=settings.mqtt.max_payload_bytes,
            verifier=JobVerifier(sec.job_keys) if sec.job_keys else None,
            max_age=timedelta(seconds=sec.max_job_age_s),
            max_future=timedelta(seconds=sec.max_future_skew_s), now=now, box=self.box,
        )
        self.drivers = drivers if drivers is not None else make_drivers(settings)
        locks = {lock.id: (lock.door_id, self.drivers[lock.id]) for lock in settings.locks}
        self.reconciler = Reconciler(self.engine, self.box, locks, settings.provisioning, now)
        self.deadlines = Deadlines(self._on_deadlines, lambda: self.now().timestamp())
        self.mqtt = MqttLink(
            settings.mqtt, settings.mqtt_client_id, self.topics, self.store, self._on_job,
            self._state_payload,
        )
        self.store.on_enqueue = self.mqtt.kick  # every status, event and ack wakes the relay
        self._stopping = asyncio.Event()

    # --- glue -----------------------------------------------------------------------------
    def _state_payload(self, state: str) -> bytes:
        return dumps({
            "state": state, "boot_id": self.boot_id, "version": VERSION,
            "started_at": rfc3339(self.started),
            "doors": sorted(lock.door_id for lock in self.settings.locks),
        })

    def _on_job(self, payload: bytes) -> None:
        try:
            out = self.engine.handle(payload)
        except Exception:
            # Nothing was committed (the transaction rolled back); the broker redelivers it.
            log.exception("job handling failed")
            raise
        self.reconciler.wake(out.dirty)
        for key_id in out.touched:
            self._arm(key_id)
        job = out.job
        if job is not None and out.result == "accepted" and job.type in MAINTENANCE:
            self._maintenance(job.type, getattr(job.body, "lock_id", None))

    def _maintenance(self, kind: str, lock_id: str | None) -> None:
        if kind == "gateway.republish":
            self.mqtt.request_republish()
            return
        action = "reconcile" if kind == "lock.reconcile" else "sync_time"
        if not self.reconciler.request(lock_id, action):
            log.warning("%s for unknown lock %s ignored", kind, lock_id)

    def _arm(self, key_id: str) -> None:
        span = self.store.key_window(key_id)
        if span is not None:
            self._arm_window(key_id, *span, now=self.now().timestamp())

    def _arm_window(self, key_id: str, vf: int | None, vu: int | None, now: float) -> None:
        """Fire the key at each edge of its window still ahead."""
        self.deadlines.arm(key_id, *(t for t in (vf, vu) if t is not None and t > now))

    def _on_deadlines(self, key_ids: list[str]) -> None:
        self.reconciler.wake(self.engine.evaluate_all(key_ids))

    def _rearm_all(self) -> None:
        """After a start: future windows armed, windows that passed while down evaluated now."""
        now = self.now().timestamp()
        overdue = []
        for key_id, vf, vu in self.store.key_deadlines():
            self._arm_window(key_id, vf, vu, now)
            if vu is not None and vu <= now:
                overdue.append(key_id)
        unsettled = {k for k in overdue if any(r.state not in _SETTLED for r in self.store.doors_of_key(k))}
        if unsettled:
            self._on_deadlines(sorted(unsettled))

    def health(self) -> dict[str, object]:
        """The periodic health object of the contract."""
        return {
            "boot_id": self.boot_id, "uptime_s": int(time.monotonic() - self.started_mono),
            "jobs_received": self.engine.counters.received,
            "jobs_rejected": self.engine.counters.rejected,
            "pending_writes": self.reconciler.pending_writes,
            "outbox_depth": self.store.outbox_depth, "mqtt_reconnects": self.mqtt.reconnects,
            "locks_online": self.reconciler.locks_online, "locks_total": len(self.reconciler.workers),
        }

    async def _health_loop(self) -> None:
        interval = self.settings.gateway.health_interval_s
        while True:
            await asyncio.sleep(interval)
            if self.mqtt.connected.is_set():  # stale health is worthless: not kept in the outbox
                with self.store.transaction():
                    self.store.enqueue(self.topics.health, dumps(self.health()))

    async def _housekeeping(self) -> None:
        while True:
            keep = max(self.settings.security.max_job_age_s * 2, 30 * 86400)
            cutoff = rfc3339(self.now() - timedelta(seconds=keep))
            with self.store.transaction():
                pruned = self.store.prune_jobs(cutoff)
            if pruned:
                log.info("forgot %d job ids older than %s", pruned, cutoff)
            await asyncio.sleep(3600)

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval()
        if interval is None:
            return
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def stop(self) -> None:
        """Begin a clean shutdown."""
        self._stopping.set()

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        """Run until stop(); publish the offline state, drain the outbox, close locks and store."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        log.info(
            "lock-gateway %s starting: site %s, gateway %s, %d locks, boot %s", VERSION,
            self.settings.gateway.site_id, self.settings.gateway.gateway_id,
            len(self.settings.locks), self.boot_id,
        )
        self.reconciler.resume_all()
        self._rearm_all()
        try:
            async with asyncio.TaskGroup() as tg:
                link = tg.create_task(self.mqtt.run(), name="mqtt")
                others = [
                    tg.create_task(self.reconciler.run(), name="reconciler"),
                    tg.create_task(self.deadlines.run(), name="deadlines"),
                    tg.create_task(self._health_loop(), name="health"),
                    tg.create_task(self._housekeeping(), name="housekeeping"),
                    tg.create_task(self._watchdog(), name="watchdog"),
                ]
                sdnotify.notify("READY=1\nSTATUS=running")
                await self._stopping.wait()
                log.info("stopping")
                sdnotify.notify("STOPPING=1")
                for task in others:
                    task.cancel()
                self.mqtt.stop()
                try:
                    await asyncio.wait_for(asyncio.shield(link), timeout=10)
                except TimeoutError:
                    log.warning("broker did not take the last messages in time; they stay queued")
                    link.cancel()
        finally:
            await self.reconciler.close()
            self.store.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        log.info("stopped")
