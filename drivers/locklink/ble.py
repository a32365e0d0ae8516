"""LockLink over Bluetooth LE (spec section 5) through bleak: one GATT connection per lock.

The locks of one adapter share `max_connections_per_adapter` slots: a link holds one while
connected, frees it when idle, and yields it to a waiting lock after `min_hold_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.args.bluez import BlueZScannerArgs
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.exc import BleakDeviceNotFoundError, BleakError
from bleak_retry_connector import establish_connection, get_device, get_device_by_adapter
from dbus_fast import DBusError

from drivers.base import LockDriver, LockOfflineError
from drivers.locklink.driver import LockLinkDriver
from drivers.locklink.frame import Frame, FrameDecoder, encode
from drivers.locklink.link import FrameLink
from gateway.config import BleSection, ConfigError, LockConfig

log = logging.getLogger(__name__)

SERVICE_UUID = "7a1e0001-4c4c-4b31-9a5b-2f4e6b0c1d01"
WRITE_UUID = "7a1e0002-4c4c-4b31-9a5b-2f4e6b0c1d01"  # write with response: gateway -> lock
NOTIFY_UUID = "7a1e0003-4c4c-4b31-9a5b-2f4e6b0c1d01"  # notify: lock -> gateway
MIN_CHUNK = 20  # ATT MTU 23 - 3

_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
# Everything the BLE stack raises when a lock or the radio is unreachable.
_LINK_ERRORS = (BleakError, DBusError, TimeoutError, EOFError, OSError)


def _offline(what: str, exc: BaseException | None = None, lock_id: str | None = None) -> LockOfflineError:
    """A LockOfflineError with a short, secret-free message."""
    detail = f" ({type(exc).__name__})" if exc is not None else ""
    return LockOfflineError(f"BLE {what}{detail}", lock_id=lock_id)


class SlotPool:
    """Connection slots of one adapter, shared by the locks on it; FIFO waiters, idle eviction."""

    def __init__(self, adapter: str, size: int, *, min_hold_s: float | None = 1.0) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.adapter = adapter
        self.size = size
        self.min_hold_s = min_hold_s  # None: never evict, wait for idle disconnects
        self.scan_lock = asyncio.Lock()  # BlueZ allows one discovery session per client
        self._holders: dict[BleLink, float] = {}  # link -> time it got the slot / connected
        self._waiters: deque[tuple[BleLink, asyncio.Future[None]]] = deque()
        self._evicting: set[BleLink] = set()
        self._kicks: set[asyncio.Future[None]] = set()
        self.peak = self.waits = self.timeouts = self.evictions = 0  # statistics

    def __repr__(self) -> str:
        return f"SlotPool({self.adapter}, {self.in_use}/{self.size}, waiting={self.waiting})"

    @property
    def in_use(self) -> int:
        """Slots held now."""
        return len(self._holders)

    @property
    def waiting(self) -> int:
        """Links waiting for a slot."""
        return sum(not f.done() for _, f in self._waiters)

    def _shortfall(self) -> int:
        """Waiters that neither a free slot nor a running eviction will serve."""
        return self.waiting - (self.size - len(self._holders)) - len(self._evicting)

    async def acquire(self, link: BleLink, timeout: float) -> None:  # noqa: ASYNC109
        """Get a slot for `link` within `timeout` seconds or raise LockOfflineError."""
        if link in self._holders:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append((link, fut))
        self._grant()
        if not fut.done():
            self.waits += 1
        try:
            async with asyncio.timeout(timeout):
                while not fut.done():
                    delay = self._evict_for_waiters(loop.time())
                    kick: asyncio.Future[None] = loop.create_future()
                    self._kicks.add(kick)
                    try:
                        await asyncio.wait({fut, kick}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        self._kicks.discard(kick)
                        kick.cancel()
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                return  # granted right at the deadline
            self.timeouts += 1
            raise _offline(f"no free connection slot on {self.adapter}") from None
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(link)
            raise
        finally:
            if not fut.done():
                fut.cancel()
                self._waiters = deque(w for w in self._waiters if w[1] is not fut)

    def release(self, link: BleLink) -> None:
        """Give the slot of `link` back (idempotent) and hand it to the next waiter."""
        if self._holders.pop(link, None) is not None:
            self._evicting.discard(link)
            self._grant()
            self.kick()

    def connected(self, link: BleLink) -> None:
        """`link` finished connecting: its minimum hold time starts now."""
        if link in self._holders:
            self._holders[link] = asyncio.get_running_loop().time()

    def should_yield(self, link: BleLink) -> bool:
        """True when `link` has held its slot for `min_hold_s` and a waiter needs a slot."""
        if self.min_hold_s is None or link not in self._holders or link in self._evicting:
            return False
        now = asyncio.get_running_loop().time()
        if now - self._holders[link] < self.min_hold_s:
            return False
        return self._shortfall() > 0

    def eviction_ended(self, link: BleLink) -> None:
        """An eviction finished (the link may have kept its slot if it became busy)."""
        self._evicting.discard(link)
        self.kick()

    def kick(self) -> None:
        """Wake waiters to re-check (a holder went idle or a slot came free)."""
        for k in self._kicks:
            if not k.done():
                k.set_result(None)

    def _grant(self) -> None:
        now = asyncio.get_running_loop().time()
        while self._waiters and len(self._holders) < self.size:
            link, fut = self._waiters.popleft()
            if fut.done():
                continue
            self._holders[link] = now
            self.peak = max(self.peak, len(self._holders))
            fut.set_result(None)

    def _evict_for_waiters(self, now: float) -> float | None:
        """Ask idle holders to disconnect for the waiters; return when to look again (None: on kick)."""
        if self.min_hold_s is None:
            return None
        need = self._shortfall()
        next_at: float | None = None
        for link in sorted(self._holders, key=lambda lk: lk.last_used):
            if need <= 0:
                break
            if link in self._evicting or link.busy:
                continue
            ready_at = self._holders[link] + self.min_hold_s
            if ready_at <= now:
                self._evicting.add(link)
                self.evictions += 1
                link.evict()
                need -= 1
            elif next_at is None or ready_at < next_at:
                next_at = ready_at
        return None if next_at is None or need <= 0 else max(0.0, next_at - now)


@dataclass
class LinkStats:
    """Counters of one BLE link."""

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    link_losses: int = 0
    evictions: int = 0
    exchanges: int = 0
    timeouts: int = 0
    stray_frames: int = 0


class BleLink(FrameLink):
    """FrameLink to one lock over GATT: connects on demand, disconnects when idle or evicted."""

    transport = "ble"

    def __init__(
        self,
        address: str,
        *,
        adapter: str | None = None,
        pool: SlotPool | None = None,
        name: str | None = None,
        lock_id: str | None = None,
        idle_disconnect_s: float = 30.0,
        connect_timeout: float = 10.0,
        scan_timeout: float = 5.0,
        connect_attempts: int = 2,
        not_found_backoff_s: float = 10.0,
    ) -> None:
        if not _MAC.match(address):
            raise ValueError("address must be a MAC like AA:BB:CC:DD:EE:FF")
        self.address = address.upper()
        self.adapter = adapter
        self.pool = pool or SlotPool(adapter or "default", 3)
        self.name = name or self.address
        self.lock_id = lock_id
        self.idle_disconnect_s = idle_disconnect_s
        self.connect_timeout = connect_timeout
        self.scan_timeout = scan_timeout
        self.connect_attempts = connect_attempts
        self.not_found_backoff_s = not_found_backoff_s
        self.stats = LinkStats()
        self.last_used = 0.0
        self._client: BleakClient | None = None
        self._write_char: BleakGATTCharacteristic | None = None
        self._chunk = MIN_CHUNK
        self._device: BLEDevice | None = None
        self._scan_first = True  # no evidence yet that the lock is in range
        self._not_found_until = 0.0
        self._decoder = FrameDecoder()
        self._waiting: tuple[int, int, asyncio.Future[Frame]] | None = None
        self._dirty = False  # a write sequence was cut: flush the lock's decoder first
        self._lock = asyncio.Lock()
        self._busy = False
        self._idle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"BleLink({self.address}, adapter={self.adapter}, connected={self.connected})"

    @property
    def connected(self) -> bool:
        """True while a GATT connection is up."""
        return self._client is not None and self._client.is_connected

    @property
    def busy(self) -> bool:
        """True while an exchange (or connect) runs."""
        return self._busy or self._lock.locked()

    @property
    def chunk_size(self) -> int:
        """Bytes per GATT write (ATT MTU - 3 of the current connection)."""
        return self._chunk

    async def exchange(self, frame: Frame, *, timeout: float) -> Frame:  # noqa: ASYNC109
        """Send one request and wait for its response (connecting first if needed)."""
        wire = encode(frame)
        async with self._lock:
            self._busy = True
            self._cancel_idle()
            try:
                if self._client is not None and self.pool.should_yield(self):
                    self.stats.evictions += 1  # a busy lock takes turns with waiting ones
                    await self._disconnect()
                client = await self._ensure_connected(timeout)
                self.stats.exchanges += 1
                return await self._send(client, frame, wire, timeout)
            finally:
                self._busy = False
                self.last_used = asyncio.get_running_loop().time()
                if self._client is not None:
                    self._arm_idle()
                self.pool.kick()

    async def close(self) -> None:
        """Disconnect and give the slot back (the next exchange reconnects)."""
        async with self._lock:
            await self._disconnect()
        for task in list(self._tasks):
            task.cancel()

    def evict(self) -> None:
        """Called by the pool: disconnect soon if still idle, freeing the slot for a waiter."""
        self._spawn(self._evict())

    # ---- connection ----------------------------------------------------------------------
    async def _ensure_connected(self, timeout: float) -> BleakClient:  # noqa: ASYNC109
        client = self._client
        if client is not None and client.is_connected:
            return client
        if client is not None:
            await self._disconnect()
        loop = asyncio.get_running_loop()
        if loop.time() < self._not_found_until:
            raise _offline("lock not found recently", lock_id=self.lock_id)
        try:  # look for the lock before taking a slot: an absent lock must not hold one
            async with asyncio.timeout(self.connect_timeout):
                device = await self._find_device()
        except _LINK_ERRORS as exc:
            self.stats.connect_failures += 1
            what = "lock not found" if isinstance(exc, BleakDeviceNotFoundError) else "scan failed"
            raise _offline(what, exc, self.lock_id) from None
        await self.pool.acquire(self, timeout)
        try:
            async with asyncio.timeout(self.connect_timeout):
                client, char = await self._connect(device)
        except _LINK_ERRORS as exc:
            self.pool.release(self)
            self.stats.connect_failures += 1
            self._scan_first = True
            log.debug("%s: connect failed: %r", self.name, exc)
            raise _offline("connect failed", exc, self.lock_id) from None
        except BaseException:
            self.pool.release(self)
            raise
        self._client = client
        self._write_char = char
        self._chunk = max(MIN_CHUNK, char.max_write_without_response_size)
        self._decoder.reset()
        self._dirty = False
        self._scan_first = False
        self.pool.connected(self)
        self.stats.connects += 1
        log.debug("%s: connected, %d-byte writes", self.name, self._chunk)
        return client

    async def _connect(self, device: BLEDevice) -> tuple[BleakClient, BleakGATTCharacteristic]:
        client = await establish_connection(
            BleakClient,
            device,
            self.name,
            disconnected_callback=self._on_disconnected,
            max_attempts=self.connect_attempts,
        )
        try:
            char = client.services.get_characteristic(WRITE_UUID)
            if char is None or client.services.get_characteristic(NOTIFY_UUID) is None:
                raise BleakError("LockLink GATT service missing")
            await client.start_notify(NOTIFY_UUID, self._on_notify)
        except BaseException:
            with contextlib.suppress(*_LINK_ERRORS):
                await client.disconnect()
            raise
        return client, char

    async def _find_device(self) -> BLEDevice:
        """The lock's BLEDevice: BlueZ's known object after a good connection, else a bounded scan."""
        if not self._scan_first:
            if self.adapter:
                known = await get_device_by_adapter(self.address, self.adapter)
            else:
                known = await get_device(self.address) or self._device
            if known is not None:
                return known
        bluez: BlueZScannerArgs = {"adapter": self.adapter} if self.adapter else {}
        async with self.pool.scan_lock:
            device = await BleakScanner.find_device_by_address(
                self.address, timeout=self.scan_timeout, bluez=bluez
            )
        if device is None:
            self._device = None
            self._not_found_until = asyncio.get_running_loop().time() + self.not_found_backoff_s
            raise BleakDeviceNotFoundError(self.address, "lock not found")
        self._device = device
        return device

    def _on_disconnected(self, client: BleakClient) -> None:
        """bleak: the link went down (peer, supervision timeout, or our own disconnect)."""
        if client is not self._client:
            return
        self._client = self._write_char = None
        self._cancel_idle()
        self.stats.link_losses += 1
        self._scan_first = True
        self.pool.release(self)
        log.debug("%s: link lost", self.name)
        self._fail_waiter(_offline("link lost", lock_id=self.lock_id))

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        self._write_char = None
        self._cancel_idle()
        if client is not None:
            self.stats.disconnects += 1
            with contextlib.suppress(*_LINK_ERRORS):
                async with asyncio.timeout(5.0):
                    await client.disconnect()
        self.pool.release(self)
        self._fail_waiter(_offline("link closed", lock_id=self.lock_id))

    async def _evict(self) -> None:
        try:
            async with self._lock:
                if self._client is not None:
                    self.stats.evictions += 1
                    log.debug("%s: evicted for another lock", self.name)
                await self._disconnect()
        finally:
            self.pool.eviction_ended(self)

    # ---- exchange ------------------------------------------------------------------------
    async def _send(self, client: BleakClient, frame: Frame, wire: bytes, timeout: float) -> Frame:  # noqa: ASYNC109
        char = self._write_char
        assert char is not None
        if self._dirty:
            wire = b"\x00" + wire  # an empty frame: ends any partial frame the lock holds
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiting = (frame.addr, frame.seq, fut)
        step, sent = self._chunk, 0
        try:
            async with asyncio.timeout(timeout):
                self._dirty = True
                for sent in range(0, len(wire), step):
                    await client.write_gatt_char(char, wire[sent : sent + step], response=True)
                self._dirty = False
                return await fut
        except TimeoutError:
            self.stats.timeouts += 1
            raise _offline("no answer in time", lock_id=self.lock_id) from None
        except LockOfflineError:
            raise
        except _LINK_ERRORS as exc:
            log.debug("%s: write failed at byte %d: %r", self.name, sent, exc)
            await self._disconnect()
            raise _offline("write failed", exc, self.lock_id) from None
        finally:
            self._waiting = None
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: no "never retrieved" warning

    def _on_notify(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        for frame in self._decoder.feed(bytes(data)):
            w = self._waiting
            if w is not None and frame.is_response and (frame.addr, frame.seq) == w[:2]:
                if not w[2].done():
                    w[2].set_result(frame)
            else:
                self.stats.stray_frames += 1

    def _fail_waiter(self, exc: LockOfflineError) -> None:
        w = self._waiting
        if w is not None and not w[2].done():
            w[2].set_exception(exc)

    # ---- idle handling -------------------------------------------------------------------
    def _arm_idle(self) -> None:
        self._cancel_idle()
        self._idle = asyncio.get_running_loop().call_later(self.idle_disconnect_s, self._spawn_idle)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _spawn_idle(self) -> None:
        self._idle = None
        self._spawn(self._idle_disconnect())

    async def _idle_disconnect(self) -> None:
        async with self._lock:
            if self._client is not None and self._idle is None:
                log.debug("%s: idle, disconnecting", self.name)
                await self._disconnect()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def make_ble_drivers(locks: list[LockConfig], ble: BleSection) -> dict[str, LockDriver]:
    """One LockLinkDriver per lock with driver 'ble'; locks of one adapter share a SlotPool."""
    pools: dict[str, SlotPool] = {}
    seen: dict[str, str] = {}
    drivers: dict[str, LockDriver] = {}
    for lock in locks:
        if lock.driver != "ble":
            continue
        address = lock.address
        if not isinstance(address, str) or not _MAC.match(address):
            raise ConfigError(f"locks[{lock.id}].address: must be a MAC like AA:BB:CC:DD:EE:FF")
        if (other := seen.get(address.upper())) is not None:
            raise ConfigError(f"locks[{lock.id}].address: {address} is also lock {other}")
        seen[address.upper()] = lock.id
        adapter = lock.adapter or ""
        pool = pools.get(adapter)
        if pool is None:
            pool = pools[adapter] = SlotPool(
                adapter or "default", ble.max_connections_per_adapter, min_hold_s=ble.min_hold_s
            )
        link = BleLink(address, adapter=lock.adapter, pool=pool, name=lock.id, lock_id=lock.id,
                       idle_disconnect_s=ble.idle_disconnect_s)  # fmt: skip
        key = lock.lock_key()
        drivers[lock.id] = LockLinkDriver(lock.id, link, key, addr=0, timeout=ble.response_timeout_s)
    return drivers
