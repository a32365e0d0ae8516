"""The simulator serving BLE locks from a gateway config: parsing, and a LockLinkDriver over bleak."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from drivers.base import CredentialType, SlotWrite
from drivers.locklink.ble import make_ble_drivers
from drivers.sim.bluez_bus import SYSTEM_BUS_ENV, dbus_daemon_path
from drivers.sim.control import request
from drivers.sim.simulator import SetupError, Simulator, spec_from_toml
from gateway.config import BleSection, LockConfig

KEY_HEX = "00112233445566778899aabbccddeeff"
GW_TOML = f"""
[[locks]]
id = "lock-m"
door_id = "m"
driver = "memory"
[[locks]]
id = "lock-b1"
door_id = "b1"
driver = "ble"
address = "aa:bb:cc:00:00:01"
key = "{KEY_HEX}"
[[locks]]
id = "lock-b2"
door_id = "b2"
driver = "ble"
adapter = "hci1"
address = "AA:BB:CC:00:00:02"
key = "{KEY_HEX}"
serial = "BLE00002"
"""


def test_spec_reads_ble_locks(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(GW_TOML)
    spec = spec_from_toml(cfg)
    assert [(s.name, s.mac, s.adapter, s.address, s.port) for s in spec.locks] == [
        ("lock-b1", "AA:BB:CC:00:00:01", "hci0", 0, None),
        ("lock-b2", "AA:BB:CC:00:00:02", "hci1", 0, None),
    ]
    sim = Simulator(spec)
    assert sim.buses == [] and sim.ble is not None
    assert sim.port_of("lock-b2") == "ble:hci1/AA:BB:CC:00:00:02"
    assert sim.dbus_address is None  # not started
    cfg.write_text(GW_TOML.replace("aa:bb:cc:00:00:01", "nope"))
    with pytest.raises(SetupError, match="MAC"):
        spec_from_toml(cfg)
    cfg.write_text(GW_TOML.replace("AA:BB:CC:00:00:02", "aa:bb:cc:00:00:01"))
    with pytest.raises(SetupError, match="two BLE locks"):
        Simulator(spec_from_toml(cfg))


@pytest.mark.skipif(dbus_daemon_path() is None, reason="dbus-daemon not installed")
async def test_driver_talks_to_simulated_ble_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(GW_TOML)
    spec = spec_from_toml(cfg)
    spec.control = tmp_path / "ctl.sock"
    async with Simulator(spec) as sim:
        assert sim.dbus_address and sim.dbus_address.startswith("unix:")
        monkeypatch.setenv(SYSTEM_BUS_ENV, sim.dbus_address)
        locks = [LockConfig(id="lock-b2", door_id="b2", driver="ble", address="AA:BB:CC:00:00:02",
                            adapter="hci1", key=KEY_HEX)]
        d = make_ble_drivers(locks, BleSection(response_timeout_s=2))["lock-b2"]
        try:
            info = await d.get_info()
            assert info.serial == "BLE00002"
            await d.set_credential(SlotWrite(3, CredentialType.PIN, b"\x01" * 16, 0, 2**32 - 1,
                                             b"135790"))
        finally:
            await d.close()
        press = {"cmd": "press", "lock": "lock-b2", "code": "135790"}
        ans = await asyncio.to_thread(request, spec.control, press)
        assert ans["ok"] and ans["granted"]
        ans = await asyncio.to_thread(request, spec.control, {"cmd": "locks"})
        ports = {lk["name"]: lk["port"] for lk in ans["locks"]}
        assert ports["lock-b1"] == "ble:hci0/AA:BB:CC:00:00:01"
    assert sim.dbus_address is None
