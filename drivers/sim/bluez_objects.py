"""D-Bus service interfaces of the simulated BlueZ: Adapter1, Device1, GattService1, GattCharacteristic1."""

# No `from __future__ import annotations`: dbus-fast reads the D-Bus signatures from annotations.
from typing import TYPE_CHECKING, Annotated, Any

from dbus_fast import PropertyAccess, Variant
from dbus_fast.annotations import (
    DBusBool,
    DBusBytes,
    DBusDict,
    DBusInt16,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt16,
    DBusUInt32,
)
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

if TYPE_CHECKING:
    from drivers.sim.bluez import SimAdapter, SimPeripheral

DBusStrList = Annotated[list[str], DBusSignature("as")]
DBusPathList = Annotated[list[str], DBusSignature("ao")]

ADAPTER_IFACE = "org.bluez.Adapter1"
DEVICE_IFACE = "org.bluez.Device1"
SERVICE_IFACE = "org.bluez.GattService1"
CHAR_IFACE = "org.bluez.GattCharacteristic1"

_R = PropertyAccess.READ


def emit(iface: ServiceInterface, **changed: Any) -> None:
    """Emit PropertiesChanged for `changed` (values already stored by the caller)."""
    iface.emit_properties_changed(changed)


class AdapterInterface(ServiceInterface):
    """org.bluez.Adapter1 (StartDiscovery/StopDiscovery are answered by SimBlueZ per sender)."""

    def __init__(self, adapter: "SimAdapter") -> None:
        super().__init__(ADAPTER_IFACE)
        self._a = adapter

    @dbus_property(access=_R)
    def Address(self) -> DBusStr:
        return self._a.address

    @dbus_property(access=_R)
    def AddressType(self) -> DBusStr:
        return "public"

    @dbus_property(access=_R)
    def Name(self) -> DBusStr:
        return self._a.name

    @dbus_property(access=_R)
    def Alias(self) -> DBusStr:
        return self._a.name

    @dbus_property(access=_R)
    def Class(self) -> DBusUInt32:
        return 0

    @dbus_property(access=_R)
    def Powered(self) -> DBusBool:
        return self._a.powered

    @dbus_property(access=_R)
    def Discoverable(self) -> DBusBool:
        return False

    @dbus_property(access=_R)
    def Pairable(self) -> DBusBool:
        return False

    @dbus_property(access=_R)
    def Discovering(self) -> DBusBool:
        return self._a.discovering

    @dbus_property(access=_R)
    def UUIDs(self) -> DBusStrList:
        return []

    @dbus_property(access=_R)
    def Modalias(self) -> DBusStr:
        return "usb:v1D6Bp0246d0550"

    @dbus_property(access=_R)
    def Roles(self) -> DBusStrList:
        return ["central", "peripheral"]

    @dbus_method()
    def SetDiscoveryFilter(self, filters: DBusDict) -> None:
        return None

    @dbus_method()
    def GetDiscoveryFilters(self) -> DBusStrList:
        return ["UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable"]

    @dbus_method()
    def RemoveDevice(self, device: DBusObjectPath) -> None:
        self._a.remove_device_path(device)


class DeviceInterface(ServiceInterface):
    """org.bluez.Device1 of one simulated lock."""

    def __init__(self, dev: "SimPeripheral") -> None:
        super().__init__(DEVICE_IFACE)
        self._d = dev
        self._trusted = False

    @dbus_property(access=_R)
    def Address(self) -> DBusStr:
        return self._d.mac

    @dbus_property(access=_R)
    def AddressType(self) -> DBusStr:
        return "public"

    @dbus_property(access=_R)
    def Name(self) -> DBusStr:
        return self._d.local_name

    @dbus_property(access=_R)
    def Alias(self) -> DBusStr:
        return self._d.local_name

    @dbus_property(access=_R)
    def Adapter(self) -> DBusObjectPath:
        return self._d.adapter.path

    @dbus_property(access=_R)
    def Paired(self) -> DBusBool:
        return False

    @dbus_property(access=_R)
    def Bonded(self) -> DBusBool:
        return False

    @dbus_property()
    def Trusted(self) -> DBusBool:
        return self._trusted

    @Trusted.setter  # type: ignore[no-redef]
    def Trusted(self, value: DBusBool) -> None:
        self._trusted = value

    @dbus_property(access=_R)
    def Blocked(self) -> DBusBool:
        return False

    @dbus_property(access=_R)
    def LegacyPairing(self) -> DBusBool:
        return False

    @dbus_property(access=_R)
    def Connected(self) -> DBusBool:
        return self._d.connected

    @dbus_property(access=_R)
    def ServicesResolved(self) -> DBusBool:
        return self._d.services_resolved

    @dbus_property(access=_R)
    def RSSI(self) -> DBusInt16:
        return self._d.rssi

    @dbus_property(access=_R)
    def UUIDs(self) -> DBusStrList:
        return [self._d.service_uuid]

    @dbus_method()
    async def Connect(self) -> None:
        await self._d.connect()

    @dbus_method()
    async def Disconnect(self) -> None:
        await self._d.disconnect()


class GattServiceInterface(ServiceInterface):
    """org.bluez.GattService1 (the LockLink service)."""

    def __init__(self, uuid: str, device_path: str) -> None:
        super().__init__(SERVICE_IFACE)
        self._uuid = uuid
        self._device = device_path

    @dbus_property(access=_R)
    def UUID(self) -> DBusStr:
        return self._uuid

    @dbus_property(access=_R)
    def Primary(self) -> DBusBool:
        return True

    @dbus_property(access=_R)
    def Device(self) -> DBusObjectPath:
        return self._device

    @dbus_property(access=_R)
    def Includes(self) -> DBusPathList:
        return []


class GattCharInterface(ServiceInterface):
    """org.bluez.GattCharacteristic1; writes and notify switches go to the peripheral."""

    def __init__(
        self, dev: "SimPeripheral", uuid: str, service_path: str, flags: list[str]
    ) -> None:
        super().__init__(CHAR_IFACE)
        self._d = dev
        self._uuid = uuid
        self._service = service_path
        self._flags = flags
        self.value = b""
        self.notifying = False

    @dbus_property(access=_R)
    def UUID(self) -> DBusStr:
        return self._uuid

    @dbus_property(access=_R)
    def Service(self) -> DBusObjectPath:
        return self._service

    @dbus_property(access=_R)
    def Value(self) -> DBusBytes:
        return self.value

    @dbus_property(access=_R)
    def Notifying(self) -> DBusBool:
        return self.notifying

    @dbus_property(access=_R)
    def Flags(self) -> DBusStrList:
        return list(self._flags)

    @dbus_property(access=_R)
    def MTU(self) -> DBusUInt16:
        return self._d.mtu

    @dbus_method()
    async def ReadValue(self, options: DBusDict) -> DBusBytes:
        self._d.require_link()
        return self.value

    @dbus_method()
    async def WriteValue(self, value: DBusBytes, options: DBusDict) -> None:
        kind = options.get("type")
        mode = kind.value if isinstance(kind, Variant) else "request"
        await self._d.write(self, bytes(value), str(mode))

    @dbus_method()
    async def StartNotify(self) -> None:
        self._d.set_notifying(self, True)

    @dbus_method()
    async def StopNotify(self) -> None:
        self._d.set_notifying(self, False)
