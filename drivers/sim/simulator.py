"""A whole simulator: lock specs (from options or TOML), their pty buses, BLE, the control socket."""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from drivers.base import Caps
from drivers.sim.ble_sim import DEFAULT_ADAPTER, BleHost, BlePeripheral, check_mac
from drivers.sim.control import ControlError, ControlServer, apply_faults
from drivers.sim.lockside import MAX_ADDR, LockEndpoint, SimBus
from drivers.sim.model import DEFAULT_CAPS, Faults, SimulatedLock
from drivers.sim.pty_bus import PtyBus

KEY_LEN = 16
# keys of the gateway's own [[locks]] entries that mean nothing to the simulator
_GATEWAY_ONLY = {"door_id", "driver", "baudrate", "adapter"}
_LOCK_KEYS = {
    "name", "id", "address", "key", "key_file", "port", "serial", "model", "firmware", "slots",
    "pin_min", "pin_max", "battery", "skew_s", "latency_s", "caps", "schedule", "pin",
    "smartkey", "events", "faults",
}  # fmt: skip
_CAP_FLAGS = {
    "schedule": Caps.SCHEDULE,
    "pin": Caps.PIN,
    "smartkey": Caps.SMARTKEY,
    "events": Caps.EVENTS,
}


class SetupError(Exception):
    """The simulator description is unusable; the message says where and why."""


@dataclass
class LockSpec:
    """One simulated lock: identity, key, bus placement, rules and faults."""

    name: str
    key: bytes = field(repr=False)
    address: int = 0
    port: str | None = None  # locks with the same port share one pty; None = own pty
    mac: str | None = None  # set: a BLE lock (addr 0) advertising at this MAC, not on a pty
    adapter: str = DEFAULT_ADAPTER  # BLE only: the simulated controller it is in range of
    key_generated: bool = False
    serial: str = "SIM00001"
    model: str = "LL-SIM"
    firmware: str = "1.0.0"
    slots: int = 32
    pin_min: int = 4
    pin_max: int = 8
    caps: Caps = DEFAULT_CAPS
    battery: int = 100
    skew_s: float = 0.0
    faults: Faults = field(default_factory=Faults)


@dataclass
class SimSpec:
    """Everything `Simulator` needs."""

    locks: list[LockSpec]
    control: Path | None = None
    baud_timing: int | None = None
    seed: int | None = 0
    links: dict[str, Path] = field(default_factory=dict)  # port name -> symlink path


def parse_key(text: str, where: str) -> bytes:
    """A 16-byte key from 32 hex digits."""
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raw = b""
    if len(raw) != KEY_LEN:
        raise SetupError(f"{where}: key must be 32 hex digits")
    return raw


def load_keys_file(path: Path) -> dict[str, bytes]:
    """Read 'NAME_OR_ADDRESS HEXKEY' lines (# comments; a lone HEXKEY applies to all, as '*')."""
    keys: dict[str, bytes] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SetupError(f"keys file {path}: {exc.strerror}") from None
    for n, line in enumerate(lines, 1):
        parts = line.split("#", 1)[0].replace("=", " ").split()
        if not parts:
            continue
        if len(parts) == 1:
            parts = ["*", parts[0]]
        if len(parts) != 2:
            raise SetupError(f"keys file {path}:{n}: expected 'NAME_OR_ADDRESS HEXKEY'")
        keys[parts[0]] = parse_key(parts[1], f"keys file {path}:{n}")
    return keys


def _resolve_keys(specs: list[LockSpec], key: str | None, keys_file: str | None) -> None:
    """Give every lock without a key one from --key, --keys-file, or a fresh random one."""
    table = load_keys_file(Path(keys_file)) if keys_file else {}
    fallback = parse_key(key, "--key") if key else table.get("*")
    for ls in specs:
        if ls.key:
            continue
        found = table.get(ls.name)
        if found is None and ls.address:
            found = table.get(str(ls.address))
        if found is None and ls.mac:
            found = table.get(ls.mac) or table.get(ls.mac.lower())
        if found is None and fallback is None and table:
            raise SetupError(f"keys file {keys_file}: no key for lock {ls.name!r}")
        ls.key = found or fallback or os.urandom(KEY_LEN)
        ls.key_generated = found is None and fallback is None


def spec_from_args(
    *,
    locks: int | None = None,
    addresses: list[int] | None = None,
    key: str | None = None,
    keys_file: str | None = None,
    slots: int = 32,
    pin_min: int = 4,
    pin_max: int = 8,
    link: str | None = None,
) -> SimSpec:
    """N locks: on one multi-drop bus when `addresses` is given, else each on its own pty."""
    count = locks if locks is not None else (len(addresses) if addresses else 1)
    if count < 1:
        raise SetupError("--locks must be at least 1")
    if addresses is not None and len(addresses) != count:
        raise SetupError(f"--addresses lists {len(addresses)} addresses for {count} locks")
    if link and addresses is None and count > 1:
        raise SetupError("--link needs a single pty: one lock, or --addresses for one bus")
    specs = [
        LockSpec(
            name=f"lock{i + 1}",
            key=b"",
            address=addresses[i] if addresses else 0,
            port="bus" if addresses else None,
            serial=f"SIM{i + 1:05d}",
            slots=slots,
            pin_min=pin_min,
            pin_max=pin_max,
        )
        for i in range(count)
    ]
    _resolve_keys(specs, key, keys_file)
    spec = SimSpec(locks=specs)
    if link:
        spec.links[specs[0].port or specs[0].name] = Path(link)
    return spec


def _lock_from_table(t: dict[str, Any], i: int, base: Path) -> LockSpec | None:
    """One [[locks]] table (the simulator's or the gateway's own format), or None to skip it."""
    where = f"locks[{i}]"
    driver = t.get("driver", "serial")
    if driver not in ("serial", "ble"):
        return None  # a gateway entry for the memory driver
    unknown = set(t) - _LOCK_KEYS - _GATEWAY_ONLY
    if unknown:
        raise SetupError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    name = str(t.get("name", t.get("id", f"lock{i + 1}")))
    where = f"locks[{name}]"
    mac: str | None = None
    if driver == "ble":
        try:
            mac = check_mac(str(t.get("address", "")), where)
        except ValueError as exc:
            raise SetupError(str(exc)) from None
    key = b""
    if "key" in t:
        key = parse_key(str(t["key"]), where)
    elif "key_file" in t:
        kf = base / str(t["key_file"])
        try:
            key = parse_key(kf.read_text(), f"{where}.key_file")
        except OSError as exc:
            raise SetupError(f"{where}.key_file: cannot read {kf}: {exc.strerror}") from None
    caps = DEFAULT_CAPS
    if "caps" in t:
        try:
            caps = Caps(0)
            for c in t["caps"]:
                caps |= Caps[str(c).upper()]
        except (KeyError, TypeError):
            raise SetupError(f"{where}.caps: use names from {[c.name for c in Caps]}") from None
    for flag, bit in _CAP_FLAGS.items():
        if flag in t:
            caps = caps | bit if t[flag] else caps & ~bit
    try:
        faults = apply_faults(Faults(), dict(t.get("faults", {})))
        if "latency_s" in t:
            faults = apply_faults(faults, {"latency_s": t["latency_s"]})
        spec = LockSpec(
            name=name,
            key=key,
            address=0 if mac else int(t.get("address", 0)),
            port=str(t["port"]) if "port" in t and not mac else None,
            mac=mac,
            adapter=str(t.get("adapter") or DEFAULT_ADAPTER),
            serial=str(t.get("serial", f"SIM{i + 1:05d}")),
            model=str(t.get("model", "LL-SIM")),
            firmware=str(t.get("firmware", "1.0.0")),
            slots=int(t.get("slots", 32)),
            pin_min=int(t.get("pin_min", 4)),
            pin_max=int(t.get("pin_max", 8)),
            caps=caps,
            battery=int(t.get("battery", 100)),
            skew_s=float(t.get("skew_s", 0.0)),
            faults=faults,
        )
    except (ControlError, TypeError, ValueError) as exc:
        raise SetupError(f"{where}: {exc}") from None
    if not 0 <= spec.address <= MAX_ADDR:
        raise SetupError(f"{where}.address must be 0..{MAX_ADDR}")
    return spec


def spec_from_toml(
    path: Path, *, fallback_key: str | None = None, keys_file: str | None = None
) -> SimSpec:
    """Read `[sim]` and `[[locks]]` from a TOML file (a gateway config file also works)."""
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SetupError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SetupError(f"{path}: {exc}") from None
    sim = doc.get("sim", {})
    tables = doc.get("locks", doc.get("lock", []))
    if not isinstance(sim, dict) or not isinstance(tables, list):
        raise SetupError(f"{path}: expected a [sim] table and [[locks]] tables")
    specs = [s for i, t in enumerate(tables) if (s := _lock_from_table(t, i, path.parent))]
    if not specs:
        raise SetupError(f"{path}: no serial or BLE [[locks]] to simulate")
    _resolve_keys(specs, fallback_key, keys_file)
    spec = SimSpec(locks=specs, seed=sim.get("seed", 0), baud_timing=sim.get("baud_timing"))
    if "control" in sim:
        spec.control = Path(sim["control"])
    for ls in specs:  # a port that looks like a path gets a symlink to the pty
        if ls.port and not ls.mac and "/" in ls.port:
            spec.links[ls.port] = Path(ls.port)
    return spec


class Simulator:
    """Runs a SimSpec: one PtyBus per port, BLE locks on a simulated BlueZ, the control socket."""

    def __init__(self, spec: SimSpec, *, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.endpoints: list[LockEndpoint] = []
        self.buses: list[PtyBus] = []
        groups: dict[str, list[LockEndpoint]] = {}
        ble: list[BlePeripheral] = []
        names: set[str] = set()
        for ls in spec.locks:
            if ls.name in names:
                raise SetupError(f"lock name {ls.name!r} used twice")
            names.add(ls.name)
            try:
                lock = SimulatedLock(
                    serial=ls.serial, model=ls.model, firmware=ls.firmware, slots=ls.slots,
                    pin_min=ls.pin_min, pin_max=ls.pin_max, caps=ls.caps, battery=ls.battery,
                    clock=clock, skew_s=ls.skew_s, faults=ls.faults,
                )  # fmt: skip
                ep = LockEndpoint(lock, ls.key, ls.address, name=ls.name)
            except ValueError as exc:
                raise SetupError(f"locks[{ls.name}]: {exc}") from None
            self.endpoints.append(ep)
            if ls.mac:
                seed = None if spec.seed is None else spec.seed + 1000 + len(ble)
                ble.append(BlePeripheral(ls.adapter, ls.mac.upper(), ls.serial, ep, seed))
            else:
                groups.setdefault(ls.port or ls.name, []).append(ep)
        for n, (port, eps) in enumerate(groups.items()):
            seed = None if spec.seed is None else spec.seed + n
            try:
                bus = SimBus(eps, seed=seed)
            except ValueError as exc:
                raise SetupError(f"port {port}: {exc}") from None
            label = Path(port).name if "/" in port else port
            link = spec.links.get(port)
            self.buses.append(PtyBus(bus, baud_timing=spec.baud_timing, link=link, name=label))
        try:
            self.ble: BleHost | None = BleHost(ble) if ble else None
        except ValueError as exc:
            raise SetupError(str(exc)) from None
        self.control: ControlServer | None = None
        if spec.control is not None:
            self.control = ControlServer(self.endpoints, spec.control)

    def lock(self, name: str) -> LockEndpoint:
        """The endpoint of the lock called `name`."""
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        raise KeyError(name)

    @property
    def dbus_address(self) -> str | None:
        """The private system bus of the simulated BlueZ (None: no BLE locks, or not started)."""
        return self.ble.address if self.ble is not None else None

    def port_of(self, name: str) -> str:
        """The pty path (or its symlink) serving lock `name`; `ble:ADAPTER/MAC` for BLE locks."""
        if self.ble is not None and (label := self.ble.label_of(name)) is not None:
            return label
        for pb in self.buses:
            if any(ep.name == name for ep in pb.endpoints):
                return str(pb.link) if pb.link else pb.path
        raise KeyError(name)

    async def start(self) -> None:
        """Open every pty, the BLE bus and BlueZ, and the control socket."""
        try:
            for pb in self.buses:
                await pb.start()
            if self.ble is not None:
                await self.ble.start()
            if self.control is not None:
                self.control.ports = {ep.name: self.port_of(ep.name) for ep in self.endpoints}
                await self.control.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close the control socket, BlueZ and its bus, and every pty."""
        if self.control is not None:
            await self.control.stop()
        if self.ble is not None:
            await self.ble.stop()
        for pb in self.buses:
            await pb.stop()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
