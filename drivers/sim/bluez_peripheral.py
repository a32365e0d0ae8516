"""One simulated BLE lock of SimBlueZ: Device1, the LockLink GATT service, fault injection."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dbus_fast import DBusError

from drivers.locklink.ble import NOTIFY_UUID, SERVICE_UUID, WRITE_UUID
from drivers.sim.bluez_objects import (
    DeviceInterface,
    GattCharInterface,
    GattServiceInterface,
    emit,
)

if TYPE_CHECKING:
    from drivers.sim.bluez import SimAdapter, SimBlueZ

ERR_FAILED = "org.bluez.Error.Failed"
ERR_IN_PROGRESS = "org.bluez.Error.InProgress"
ERR_NOT_CONNECTED = "org.bluez.Error.NotConnected"
ERR_NOT_PERMITTED = "org.bluez.Error.NotPermitted"
ERR_NOT_SUPPORTED = "org.bluez.Error.NotSupported"
ERR_INVALID_ARGS = "org.bluez.Error.InvalidArguments"


class StreamHandler(Protocol):
    """The lock behind a peripheral: bytes written by the central in, (delay_s, bytes) to notify out."""

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        """Consume written bytes; return the notifications to send and when."""
        ...


@dataclass
class PeripheralStats:
    """Counters of one simulated peripheral."""

    connect_attempts: int = 0
    connects: int = 0
    disconnects: int = 0
    link_drops: int = 0
    writes: int = 0
    bytes_in: int = 0
    max_write: int = 0
    notifications: int = 0
    bytes_out: int = 0
    max_notification: int = 0
    lost_notifications: int = 0


def _path_mac(mac: str) -> str:
    return mac.upper().replace(":", "_")


class SimPeripheral:
    """One simulated BLE lock: Device1 plus the LockLink GATT service while connected."""

    def __init__(
        self,
        sim: SimBlueZ,
        adapter: SimAdapter,
        mac: str,
        name: str,
        handler: StreamHandler,
        *,
        mtu: int = 23,
        rssi: int = -60,
    ) -> None:
        self.sim = sim
        self.adapter = adapter
        self.mac = mac.upper()
        self.local_name = name
        self.handler = handler
        self.path = f"{adapter.path}/dev_{_path_mac(mac)}"
        self.service_uuid = SERVICE_UUID
        self.mtu = mtu
        self.rssi = rssi
        self._base_rssi = rssi
        self.advertising = True
        self.exported = False
        self.connected = False
        self.services_resolved = False
        # timing knobs (seconds)
        self.connect_delay = 0.0
        self.discovery_delay = 0.0
        self.write_latency = 0.0
        self.response_latency = 0.0
        self.page_timeout = 2.0
        # fault plan
        self._connect_failures: deque[tuple[str, str]] = deque()
        self._drop_on_discovery = 0
        self._drop_on_write = 0
        self._connecting = False
        self._pending: set[asyncio.Future[DBusError]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._outbox: asyncio.Queue[tuple[float, bytes]] | None = None
        self._last_due = 0.0
        self._gen = 0
        self.stats = PeripheralStats()
        self.device_iface = DeviceInterface(self)
        svc = f"{self.path}/service000a"
        self.service_iface = GattServiceInterface(SERVICE_UUID, self.path)
        self.write_char = GattCharInterface(self, WRITE_UUID, svc, ["write"])
        self.notify_char = GattCharInterface(self, NOTIFY_UUID, svc, ["notify"])
        self._gatt: list[tuple[str, GattServiceInterface | GattCharInterface]] = [
            (svc, self.service_iface),
            (f"{svc}/char000b", self.write_char),
            (f"{svc}/char000d", self.notify_char),
        ]

    def __repr__(self) -> str:
        return f"SimPeripheral({self.mac}, {self.local_name!r}, connected={self.connected})"

    # ---- fault injection -------------------------------------------------------------
    def fail_connect(
        self, times: int = 1, *, error: str = ERR_FAILED, message: str = "Software caused connection abort"
    ) -> None:
        """Make the next `times` Connect calls fail with D-Bus error `error`."""
        self._connect_failures.extend([(error, message)] * times)

    def drop_on_discovery(self, times: int = 1) -> None:
        """Drop the link during GATT service discovery of the next `times` connections."""
        self._drop_on_discovery += times

    def drop_on_write(self, times: int = 1) -> None:
        """Drop the link while the next `times` writes are pending (they get an error reply)."""
        self._drop_on_write += times

    def drop_link(self) -> None:
        """Lose the link now (supervision timeout): Connected=False, pending calls fail."""
        if self.connected:
            self.stats.link_drops += 1
            self._link_down()

    def forget(self) -> None:
        """BlueZ drops the device object (as after the temporary-device timeout)."""
        self._link_down()
        if self.exported:
            self.exported = False
            with contextlib.suppress(Exception):
                self.sim.bus.unexport(self.path, self.device_iface)

    # ---- called by the D-Bus interfaces -----------------------------------------------
    def require_link(self) -> None:
        """Raise the BlueZ error for a GATT call without a connection."""
        if not self.connected:
            raise DBusError(ERR_FAILED, "Not connected")

    async def connect(self) -> None:
        """Device1.Connect: establish the link; GATT discovery continues after the reply."""
        self.stats.connect_attempts += 1
        if self.connected:
            return
        if self._connecting:
            raise DBusError(ERR_IN_PROGRESS, "In Progress")
        self._connecting = True
        try:
            if self._connect_failures:
                name, text = self._connect_failures.popleft()
                await self._linger(self.connect_delay)
                raise DBusError(name, text)
            if not self.advertising:
                await self._linger(self.page_timeout)
                raise DBusError(ERR_FAILED, "Host is down")
            await self._linger(self.connect_delay)
            limit = self.adapter.max_connections
            if limit is not None and self.adapter.connected_count() >= limit:
                raise DBusError(ERR_FAILED, "Connection refused (no free controller slot)")
        finally:
            self._connecting = False
        self._link_up()

    async def disconnect(self) -> None:
        """Device1.Disconnect: cancel a pending Connect or close the link."""
        if self._connecting:
            self._abort_pending(DBusError(ERR_FAILED, "Operation aborted"))
            return
        if not self.connected:
            raise DBusError(ERR_NOT_CONNECTED, "Not Connected")
        self.stats.disconnects += 1
        self._link_down()

    async def write(self, char: GattCharInterface, data: bytes, mode: str) -> None:
        """GattCharacteristic1.WriteValue on the gateway-to-lock characteristic."""
        self.require_link()
        if char is not self.write_char:
            raise DBusError(ERR_NOT_PERMITTED, "Write not permitted")
        if len(data) > self.mtu - 3:
            raise DBusError(ERR_INVALID_ARGS, "Invalid Length")
        st = self.stats
        st.writes += 1
        st.bytes_in += len(data)
        st.max_write = max(st.max_write, len(data))
        if self._drop_on_write > 0:
            self._drop_on_write -= 1
            asyncio.get_running_loop().call_soon(self.drop_link)
            await self._linger(None)
        if self.write_latency > 0:
            await self._linger(self.write_latency)
        for delay, out in self.handler.feed(data):
            self._schedule(delay + self.response_latency, out)

    def set_notifying(self, char: GattCharInterface, on: bool) -> None:
        """StartNotify / StopNotify."""
        self.require_link()
        if char is not self.notify_char:
            raise DBusError(ERR_NOT_SUPPORTED, "Operation is not supported")
        if char.notifying != on:
            char.notifying = on
            emit(char, Notifying=on)

    def advertise(self) -> None:
        """One advertisement seen by the adapter while it discovers."""
        if not self.advertising or self.connected:
            return
        self.rssi = self._base_rssi + random.randint(-3, 3)
        if not self.exported:
            self.exported = True
            self.sim.bus.export(self.path, self.device_iface)
        else:
            emit(self.device_iface, RSSI=self.rssi)

    # ---- internals -------------------------------------------------------------------
    async def _linger(self, delay: float | None) -> None:
        """Wait `delay` seconds (None: forever) unless the link goes down; then raise its error."""
        fut: asyncio.Future[DBusError] = asyncio.get_running_loop().create_future()
        self._pending.add(fut)
        try:
            if delay is None or delay > 0:
                await asyncio.wait({fut}, timeout=delay)
        finally:
            self._pending.discard(fut)
        if fut.done():
            raise fut.result()

    def _abort_pending(self, error: DBusError) -> None:
        for fut in list(self._pending):
            if not fut.done():
                fut.set_result(error)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _link_up(self) -> None:
        self._gen += 1
        self.connected = True
        self.stats.connects += 1
        self.adapter.note_connections()
        reset = getattr(self.handler, "reset", None)
        if callable(reset):
            reset()
        emit(self.device_iface, Connected=True)
        for path, iface in self._gatt:
            self.sim.bus.export(path, iface)
        self._outbox = asyncio.Queue()
        self._last_due = 0.0
        self._spawn(self._notifier(self._outbox))
        self._spawn(self._discover(self._gen))

    def _link_down(self) -> None:
        if not self.connected:
            return
        self._gen += 1
        self.connected = False
        self._abort_pending(DBusError(ERR_FAILED, "Not connected"))
        for task in list(self._tasks):
            task.cancel()
        self._outbox = None
        self.services_resolved = False
        self.notify_char.notifying = False
        emit(self.device_iface, ServicesResolved=False)
        emit(self.device_iface, Connected=False)
        for path, iface in self._gatt:
            with contextlib.suppress(Exception):
                self.sim.bus.unexport(path, iface)

    async def _discover(self, gen: int) -> None:
        """GATT discovery: ServicesResolved=True after discovery_delay (or a drop, if planned)."""
        if self._drop_on_discovery > 0:
            self._drop_on_discovery -= 1
            await asyncio.sleep(self.discovery_delay / 2)
            if gen == self._gen:
                self.stats.link_drops += 1
                self._link_down()
            return
        if self.discovery_delay > 0:
            await asyncio.sleep(self.discovery_delay)
        if gen == self._gen and self.connected:
            self.services_resolved = True
            emit(self.device_iface, ServicesResolved=True)

    def _schedule(self, delay: float, data: bytes) -> None:
        if self._outbox is None:
            return
        due = max(asyncio.get_running_loop().time() + delay, self._last_due)
        self._last_due = due
        self._outbox.put_nowait((due, data))

    async def _notifier(self, outbox: asyncio.Queue[tuple[float, bytes]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await outbox.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._notify(data)

    def _notify(self, data: bytes) -> None:
        """Send `data` as notifications of at most MTU-3 bytes each."""
        st = self.stats
        if not self.notify_char.notifying:
            st.lost_notifications += 1
            return
        step = max(1, self.mtu - 3)
        for i in range(0, len(data), step):
            chunk = data[i : i + step]
            self.notify_char.value = chunk
            emit(self.notify_char, Value=chunk)
            st.notifications += 1
            st.bytes_out += len(chunk)
            st.max_notification = max(st.max_notification, len(chunk))
