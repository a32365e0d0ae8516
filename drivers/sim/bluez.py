"""A simulated BlueZ (org.bluez on a private D-Bus) whose GATT peripherals are LockLink locks.

bleak's real BlueZ backend talks to it exactly as to bluetoothd: discovery, Connect, GATT
service resolution, write-with-response, notifications, link loss. Failure injection:
connect failures, slow connects, out-of-range devices, link drops mid-discovery / mid-write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace

from dbus_fast import BusType, DBusError, Message, MessageType, RequestNameReply
from dbus_fast.aio import MessageBus

from drivers.locklink.frame import FLAG_RESP, FrameDecoder, encode
from drivers.sim.bluez_objects import ADAPTER_IFACE, AdapterInterface, emit
from drivers.sim.bluez_peripheral import (
    ERR_FAILED,
    ERR_IN_PROGRESS,
    PeripheralStats,
    SimPeripheral,
    StreamHandler,
)

__all__ = [
    "EchoResponder",
    "PeripheralStats",
    "SimAdapter",
    "SimBlueZ",
    "SimPeripheral",
    "StreamHandler",
]

log = logging.getLogger(__name__)

BLUEZ_NAME = "org.bluez"
_NAME_OWNER_RULE = (
    "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
    "member='NameOwnerChanged'"
)


class EchoResponder:
    """A stand-in lock: answers each request frame with the same frame flagged RESP after `latency`."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.requests = 0
        self._decoder = FrameDecoder()

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        """Echo every complete request frame as a response."""
        out: list[tuple[float, bytes]] = []
        for frame in self._decoder.feed(data):
            if frame.is_response:
                continue
            self.requests += 1
            out.append((self.latency, encode(replace(frame, flags=frame.flags | FLAG_RESP))))
        return out

    def reset(self) -> None:
        """Forget a partial frame (new connection)."""
        self._decoder.reset()


class SimAdapter:
    """One simulated controller (hciN): discovery sessions per D-Bus client, its peripherals."""

    def __init__(
        self,
        sim: SimBlueZ,
        name: str,
        address: str,
        *,
        max_connections: int | None = None,
        adv_interval: float = 0.02,
    ) -> None:
        self.sim = sim
        self.name = name
        self.address = address
        self.path = f"/org/bluez/{name}"
        self.powered = True
        self.max_connections = max_connections
        self.adv_interval = adv_interval
        self.peak_connections = 0
        self.peripherals: dict[str, SimPeripheral] = {}
        self.iface = AdapterInterface(self)
        self._sessions: set[str] = set()
        self._adv_task: asyncio.Task[None] | None = None

    @property
    def discovering(self) -> bool:
        """True while at least one client discovers."""
        return bool(self._sessions)

    def connected_count(self) -> int:
        """Peripherals currently connected through this adapter."""
        return sum(p.connected for p in self.peripherals.values())

    def note_connections(self) -> None:
        """Track the peak number of simultaneous connections."""
        self.peak_connections = max(self.peak_connections, self.connected_count())

    def start_discovery(self, sender: str) -> None:
        """StartDiscovery from `sender` (BlueZ: one session per client)."""
        if sender in self._sessions:
            raise DBusError(ERR_IN_PROGRESS, "Operation already in progress")
        self._sessions.add(sender)
        if len(self._sessions) == 1:
            emit(self.iface, Discovering=True)
            self._adv_task = asyncio.get_running_loop().create_task(self._advertise())

    def stop_discovery(self, sender: str) -> None:
        """StopDiscovery from `sender`."""
        if sender not in self._sessions:
            raise DBusError(ERR_FAILED, "No discovery started")
        self._end_session(sender)

    def client_gone(self, sender: str) -> None:
        """A D-Bus client disconnected: end its discovery session."""
        if sender in self._sessions:
            self._end_session(sender)

    def _end_session(self, sender: str) -> None:
        self._sessions.discard(sender)
        if not self._sessions:
            if self._adv_task is not None:
                self._adv_task.cancel()
                self._adv_task = None
            emit(self.iface, Discovering=False)

    def remove_device_path(self, path: str) -> None:
        """Adapter1.RemoveDevice."""
        for p in self.peripherals.values():
            if p.path == path and p.exported:
                p.forget()
                return
        raise DBusError("org.bluez.Error.DoesNotExist", "Does Not Exist")

    async def _advertise(self) -> None:
        while True:
            for p in list(self.peripherals.values()):
                p.advertise()
            await asyncio.sleep(self.adv_interval)

    def close(self) -> None:
        """Stop discovering (simulator shutdown)."""
        if self._adv_task is not None:
            self._adv_task.cancel()
            self._adv_task = None
        self._sessions.clear()


class SimBlueZ:
    """org.bluez on a given bus: adapters, peripherals and failure injection by MAC."""

    def __init__(self, *, adv_interval: float = 0.02) -> None:
        self.adv_interval = adv_interval
        self.adapters: dict[str, SimAdapter] = {}
        self._bus: MessageBus | None = None

    @property
    def bus(self) -> MessageBus:
        """The simulator's bus connection (after start)."""
        if self._bus is None:
            raise RuntimeError("SimBlueZ not started")
        return self._bus

    async def start(self, address: str | None = None) -> None:
        """Connect to the bus at `address` (default: the system bus) and own org.bluez."""
        bus = MessageBus(bus_address=address) if address else MessageBus(bus_type=BusType.SYSTEM)
        await bus.connect()
        reply = await bus.request_name(BLUEZ_NAME)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            bus.disconnect()
            raise RuntimeError(f"cannot own {BLUEZ_NAME} on the bus ({reply.name})")
        await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[_NAME_OWNER_RULE],
            )
        )
        bus.add_message_handler(self._on_message)
        self._bus = bus
        for adapter in self.adapters.values():
            bus.export(adapter.path, adapter.iface)

    async def stop(self) -> None:
        """Drop all links and leave the bus."""
        for adapter in self.adapters.values():
            adapter.close()
            for p in adapter.peripherals.values():
                p._link_down()
        if self._bus is not None:
            bus, self._bus = self._bus, None
            bus.disconnect()
            with contextlib.suppress(Exception):
                await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> SimBlueZ:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def add_adapter(
        self, name: str = "hci0", address: str | None = None, *, max_connections: int | None = None
    ) -> SimAdapter:
        """Add a powered controller; `max_connections` caps simultaneous links (None: no cap)."""
        if name in self.adapters:
            raise ValueError(f"adapter {name} exists")
        index = len(self.adapters)
        adapter = SimAdapter(
            self,
            name,
            address or f"00:1A:7D:DA:71:{index:02X}",
            max_connections=max_connections,
            adv_interval=self.adv_interval,
        )
        self.adapters[name] = adapter
        if self._bus is not None:
            self._bus.export(adapter.path, adapter.iface)
        return adapter

    def add_peripheral(
        self,
        adapter: str,
        mac: str,
        name: str,
        handler: StreamHandler,
        *,
        mtu: int = 23,
        rssi: int = -60,
    ) -> SimPeripheral:
        """Add an advertising lock in range of `adapter`; BlueZ learns of it on discovery."""
        if not 23 <= mtu <= 517:
            raise ValueError("ATT MTU must be 23..517")
        a = self.adapters[adapter]
        key = mac.upper()
        if key in a.peripherals:
            raise ValueError(f"{mac} already in range of {adapter}")
        p = SimPeripheral(self, a, key, name, handler, mtu=mtu, rssi=rssi)
        a.peripherals[key] = p
        return p

    def peripherals(self, mac: str) -> Iterator[SimPeripheral]:
        """Every peripheral with this MAC (one per adapter it is in range of)."""
        for a in self.adapters.values():
            if (p := a.peripherals.get(mac.upper())) is not None:
                yield p

    def peripheral(self, mac: str) -> SimPeripheral:
        """The peripheral with this MAC (the first adapter's, if several)."""
        for p in self.peripherals(mac):
            return p
        raise KeyError(mac)

    def remove_peripheral(self, mac: str) -> None:
        """The lock disappears: link lost, no more adverts, BlueZ forgets the device."""
        for p in list(self.peripherals(mac)):
            p.advertising = False
            p.drop_link()
            p.forget()
            del p.adapter.peripherals[p.mac]

    def drop_link(self, mac: str) -> None:
        """Lose the link to `mac` (Connected=False; pending calls get an error reply)."""
        for p in self.peripherals(mac):
            p.drop_link()

    def set_mtu(self, mac: str, mtu: int) -> None:
        """ATT MTU of the next connections (notifications are split at MTU-3)."""
        for p in self.peripherals(mac):
            p.mtu = mtu

    def _on_message(self, msg: Message) -> Message | bool | None:
        """Answer StartDiscovery/StopDiscovery per sender; end sessions of vanished clients."""
        if msg.message_type == MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and len(msg.body) == 3 and not msg.body[2]:
                for a in self.adapters.values():
                    a.client_gone(msg.body[0])
            return None
        if (
            msg.message_type != MessageType.METHOD_CALL
            or msg.interface != ADAPTER_IFACE
            or msg.member not in ("StartDiscovery", "StopDiscovery")
        ):
            return None
        adapter = next((a for a in self.adapters.values() if a.path == msg.path), None)
        if adapter is None or not msg.sender:
            return None
        if msg.member == "StartDiscovery":
            adapter.start_discovery(msg.sender)
        else:
            adapter.stop_discovery(msg.sender)
        return Message.new_method_return(msg)
