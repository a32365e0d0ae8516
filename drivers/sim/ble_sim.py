"""BLE side of the simulator: LockLink locks as GATT peripherals of a simulated BlueZ.

`BleHost` runs a private dbus-daemon (standing in for the system bus) and a `SimBlueZ` on it;
every BLE lock is a peripheral at its MAC whose byte stream goes to a one-lock `SimBus`.
A gateway reaches them with DBUS_SYSTEM_BUS_ADDRESS set to `BleHost.address`.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from drivers.sim.bluez import SimBlueZ
from drivers.sim.bluez_bus import private_system_bus
from drivers.sim.lockside import LockEndpoint, SimBus

MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
DEFAULT_ADAPTER = "hci0"


def check_mac(text: str, where: str) -> str:
    """The MAC in upper case; ValueError unless it looks like AA:BB:CC:DD:EE:FF."""
    if not MAC_RE.match(text):
        raise ValueError(f"{where}.address: must be a MAC like AA:BB:CC:DD:EE:FF for driver 'ble'")
    return text.upper()


@dataclass
class BlePeripheral:
    """One simulated BLE lock: where it advertises and the endpoint answering it."""

    adapter: str
    mac: str
    serial: str
    endpoint: LockEndpoint
    seed: int | None = None

    @property
    def label(self) -> str:
        """Where the lock is, as the control socket's `locks` reports it."""
        return f"ble:{self.adapter}/{self.mac}"


class BleHost:
    """A private system bus plus a SimBlueZ serving every BLE lock (one adapter per name)."""

    def __init__(self, peripherals: list[BlePeripheral], *, adv_interval: float = 0.02) -> None:
        self.peripherals = peripherals
        self.bluez = SimBlueZ(adv_interval=adv_interval)
        seen: set[str] = set()
        for p in peripherals:
            if p.mac in seen:
                raise ValueError(f"MAC {p.mac} used by two BLE locks")
            seen.add(p.mac)
            if p.adapter not in self.bluez.adapters:
                self.bluez.add_adapter(p.adapter)
            handler = SimBus([p.endpoint], seed=p.seed)
            self.bluez.add_peripheral(p.adapter, p.mac, f"LL-{p.serial}", handler)
        self.address: str | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    def label_of(self, name: str) -> str | None:
        """The `ble:ADAPTER/MAC` label of lock `name`, or None if it is not a BLE lock."""
        for p in self.peripherals:
            if p.endpoint.name == name:
                return p.label
        return None

    async def start(self) -> None:
        """Start the private bus (without touching this process's environment) and BlueZ."""
        stack = contextlib.AsyncExitStack()
        try:
            self.address = await stack.enter_async_context(private_system_bus(set_env=False))
            await self.bluez.start(self.address)
            stack.push_async_callback(self.bluez.stop)
        except BaseException:
            await stack.aclose()
            self.address = None
            raise
        self._stack = stack

    async def stop(self) -> None:
        """Stop BlueZ and the bus."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self.address = None
