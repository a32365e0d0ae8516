"""SerialBus / LockLinkDriver over real pseudo-terminals served by the simulator's PtyBus."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from drivers.base import CredentialType, LockAuthFailedError, LockOfflineError, SlotWrite
from drivers.locklink.driver import LockLinkDriver
from drivers.locklink.frame import Frame
from drivers.locklink.messages import Op
from drivers.locklink.serial import SerialBus, close_buses, make_serial_drivers
from drivers.sim.lockside import LockEndpoint, SimBus
from drivers.sim.model import SimulatedLock
from drivers.sim.pty_bus import PtyBus
from gateway.config import ConfigError, LockConfig, SerialSection

KEY = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
REF = b"r" * 16
TIMEOUT = 0.15


class Recorder(LockEndpoint):
    """A simulated lock that records requests addressed to it and can swallow answers."""

    def __init__(self, addr: int, *, key: bytes = KEY, silent: bool = False) -> None:
        super().__init__(SimulatedLock(serial=f"SN{addr:03d}"), key, addr)
        self.seen: list[Frame] = []
        self.silent = silent
        self.drop_next = 0

    def handle(self, frame: Frame) -> Frame | None:
        if frame.addr == self.addr and not frame.is_response:
            self.seen.append(frame)
        resp = super().handle(frame)
        if resp is not None and (self.silent or self.drop_next):
            self.drop_next = max(0, self.drop_next - 1)
            return None
        return resp


def pin(slot: int, code: str) -> SlotWrite:
    return SlotWrite(slot, CredentialType.PIN, REF, 0, 2**32 - 1, code.encode())


async def test_single_lock_round_trip(tmp_path: Path) -> None:
    ep = Recorder(0)
    async with PtyBus(SimBus([ep]), link=tmp_path / "ttyUSB0") as pb:
        bus = SerialBus(str(tmp_path / "ttyUSB0"))
        drv = LockLinkDriver("a", bus.link(0), KEY, timeout=TIMEOUT)
        assert drv.transport == "serial"
        info = await drv.get_info()
        assert info.serial == "SN000"
        await drv.set_credential(pin(1, "2468"))
        assert (await drv.get_credential(1)).matches(pin(1, "2468"))
        assert bus.is_open and bus.opens == 1
        await drv.close()
        assert not bus.is_open
        assert pb.bytes_in > 0


async def test_multidrop_silent_lock_only_costs_itself(tmp_path: Path) -> None:
    eps = [Recorder(1), Recorder(2, silent=True), Recorder(3)]
    path = str(tmp_path / "rs485")
    async with PtyBus(SimBus(eps), link=path):
        bus = SerialBus(path)
        d1, d2, d3 = (
            LockLinkDriver(f"l{a}", bus.link(a), KEY, addr=a, timeout=TIMEOUT, tries=3)
            for a in (1, 2, 3)
        )
        served = {"l1": 0, "l3": 0}

        async def busy(drv: LockLinkDriver, until: float) -> None:
            while time.monotonic() < until:
                await drv.list_slots()
                served[drv.lock_id] += 1

        t0 = time.monotonic()
        silent = asyncio.create_task(d2.get_info())
        await asyncio.sleep(0)
        workers = [asyncio.create_task(busy(d, t0 + 1.0)) for d in (d1, d3)]
        with pytest.raises(LockOfflineError) as info:
            await silent
        elapsed = time.monotonic() - t0
        await asyncio.gather(*workers)
        assert info.value.lock_id == "l2"
        # 3 HELLO tries of TIMEOUT each, plus the others' turns in between (FIFO)
        assert 3 * TIMEOUT <= elapsed < 3 * TIMEOUT + 0.6
        assert served["l1"] >= 5 and served["l3"] >= 5
        assert [f.op for f in eps[1].seen] == [Op.HELLO] * 3
        for d in (d1, d2, d3):
            await d.close()
        assert not bus.is_open


async def test_timeout_retry_uses_same_seq(tmp_path: Path) -> None:
    ep = Recorder(5)
    path = str(tmp_path / "tty")
    async with PtyBus(SimBus([ep]), link=path):
        bus = SerialBus(path)
        drv = LockLinkDriver("a", bus.link(5), KEY, addr=5, timeout=TIMEOUT)
        await drv.get_info()
        ep.drop_next = 1
        await drv.set_credential(pin(3, "13579"))
        tries = [f for f in ep.seen if f.op == Op.SET_CREDENTIAL]
        assert len(tries) == 2
        assert tries[0].seq == tries[1].seq and tries[0].ctr < tries[1].ctr
        await drv.close()


async def test_reboot_auth_required_new_session(tmp_path: Path) -> None:
    ep = Recorder(0)
    path = str(tmp_path / "tty")
    async with PtyBus(SimBus([ep]), link=path):
        bus = SerialBus(path)
        drv = LockLinkDriver("a", bus.link(0), KEY, timeout=TIMEOUT)
        await drv.set_credential(pin(0, "1111"))
        ep.reboot()
        assert (await drv.list_slots())[1] == frozenset({0})
        assert drv.sessions == 2
        assert [f.op for f in ep.seen][-3:] == [Op.LIST_SLOTS, Op.HELLO, Op.LIST_SLOTS]
        await drv.close()


async def test_wrong_key(tmp_path: Path) -> None:
    ep = Recorder(0, key=bytes(16))
    path = str(tmp_path / "tty")
    async with PtyBus(SimBus([ep]), link=path):
        bus = SerialBus(path)
        drv = LockLinkDriver("a", bus.link(0), KEY, timeout=TIMEOUT)
        with pytest.raises(LockAuthFailedError) as info:
            await drv.get_info()
        assert KEY.hex() not in str(info.value)
        assert [f.op for f in ep.seen] == [Op.HELLO]
        await drv.close()


async def test_port_vanishes_and_is_reopened(tmp_path: Path) -> None:
    path = tmp_path / "ttyUSB0"
    ep = Recorder(0)
    bus = SerialBus(str(path))
    drv = LockLinkDriver("a", bus.link(0), KEY, timeout=TIMEOUT, tries=2)
    pb = PtyBus(SimBus([ep]), link=path)
    await pb.start()
    await drv.set_credential(pin(4, "9876"))
    assert bus.opens == 1
    await pb.stop()  # adapter unplugged: master closed, symlink removed
    assert not path.exists()
    with pytest.raises(LockOfflineError):
        await drv.get_credential(4)
    with pytest.raises(LockOfflineError, match="cannot be opened"):
        await drv.get_credential(4)
    assert not bus.is_open
    # plugged back in: a new pty behind the same path, same lock state
    pb2 = PtyBus(SimBus([ep]), link=path)
    await pb2.start()
    try:
        assert (await drv.get_credential(4)).matches(pin(4, "9876"))
        assert bus.opens == 2
    finally:
        await drv.close()
        await pb2.stop()


async def test_port_never_there(tmp_path: Path) -> None:
    bus = SerialBus(str(tmp_path / "nope"))
    drv = LockLinkDriver("a", bus.link(0), KEY, timeout=TIMEOUT, tries=2)
    t0 = time.monotonic()
    with pytest.raises(LockOfflineError):
        await drv.get_info()
    assert time.monotonic() - t0 < 1.0
    await drv.close()


async def test_garbage_and_noise_on_line(tmp_path: Path) -> None:
    ep = Recorder(0)
    path = str(tmp_path / "tty")
    async with PtyBus(SimBus([ep]), link=path) as pb:
        bus = SerialBus(path)
        drv = LockLinkDriver("a", bus.link(0), KEY, timeout=TIMEOUT)
        await drv.get_info()
        # line noise towards the gateway, including an over-long run without delimiter
        os.write(pb._master, os.urandom(64) + b"\x00" + b"\x55" * 2000 + b"\x00")
        ep.lock.faults.corrupt_rate = 0.5
        for i in range(6):
            await drv.set_credential(pin(i, f"{5000 + i}"))
        ep.lock.faults.corrupt_rate = 0.0
        assert (await drv.list_slots())[1] == frozenset(range(6))
        assert bus.dropped >= 1
        await drv.close()


def test_make_serial_drivers_groups_by_port(tmp_path: Path) -> None:
    key = KEY.hex()
    locks = [
        LockConfig(id="a", door_id="d1", driver="serial", port="/dev/x", address=1, key=key),
        LockConfig(id="b", door_id="d2", driver="serial", port="/dev/x", address=2, key=key),
        LockConfig(id="c", door_id="d3", driver="serial", port="/dev/y", key=key),
        LockConfig(id="m", door_id="d4"),
    ]
    drivers = make_serial_drivers(locks, SerialSection(response_timeout_s=0.3, tries=4))
    assert set(drivers) == {"a", "b", "c"}
    links = {k: d._link for k, d in drivers.items()}  # type: ignore[attr-defined]
    assert links["a"].bus is links["b"].bus is not links["c"].bus
    assert drivers["a"]._timeout == 0.3 and drivers["a"]._tries == 4  # type: ignore[attr-defined]
    dup = [*locks[:2], locks[1].model_copy(update={"id": "z", "door_id": "d9"})]
    with pytest.raises(ConfigError):
        make_serial_drivers(dup, SerialSection())
    mixed = [*locks[:1], locks[1].model_copy(update={"baudrate": 9600})]
    with pytest.raises(ConfigError):
        make_serial_drivers(mixed, SerialSection())


async def test_close_buses(tmp_path: Path) -> None:
    path = str(tmp_path / "tty")
    async with PtyBus(SimBus([Recorder(0)]), link=path):
        bus = SerialBus(path)
        drv = LockLinkDriver("a", bus.link(0), KEY, timeout=TIMEOUT)
        await drv.get_info()
        await close_buses()
        assert not bus.is_open
        await drv.get_info()  # reopened on demand
        await drv.close()


async def test_drops_answers_for_other_addr_and_seq(tmp_path: Path) -> None:
    """Late answers (old seq) and answers from another address never satisfy a request."""
    eps = [Recorder(1), Recorder(2)]
    eps[0].lock.faults.latency_s = TIMEOUT * 1.5  # addr 1 answers after our deadline
    path = str(tmp_path / "tty")
    async with PtyBus(SimBus(eps), link=path):
        bus = SerialBus(path)
        d1 = LockLinkDriver("l1", bus.link(1), KEY, addr=1, timeout=TIMEOUT, tries=1)
        d2 = LockLinkDriver("l2", bus.link(2), KEY, addr=2, timeout=TIMEOUT)
        with pytest.raises(LockOfflineError):
            await d1.get_info()
        info = await d2.get_info()  # addr 1's late answer arrives meanwhile and is ignored
        assert info.serial == "SN002"
        await d1.close()
        await d2.close()


async def test_cancelled_caller_frees_the_bus(tmp_path: Path) -> None:
    eps = [Recorder(1, silent=True), Recorder(2)]
    path = str(tmp_path / "tty")
    async with PtyBus(SimBus(eps), link=path):
        bus = SerialBus(path)
        d1 = LockLinkDriver("l1", bus.link(1), KEY, addr=1, timeout=5.0)
        d2 = LockLinkDriver("l2", bus.link(2), KEY, addr=2, timeout=TIMEOUT)
        stuck = asyncio.create_task(d1.get_info())
        await asyncio.sleep(0.1)
        stuck.cancel()
        t0 = time.monotonic()
        assert (await d2.get_info()).serial == "SN002"
        assert time.monotonic() - t0 < 1.0
        with pytest.raises(asyncio.CancelledError):
            await stuck
        await d1.close()
        await d2.close()
