"""Tests for the simulator's control socket, setup (options/TOML) and the `lockgw-sim` CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from drivers.base import Caps, CredentialType, EventKind, SlotWrite
from drivers.locklink import messages as m
from drivers.locklink.frame import Frame, FrameDecoder, encode
from drivers.locklink.messages import Op
from drivers.sim.control import ControlServer, request
from drivers.sim.lockside import LockEndpoint
from drivers.sim.model import SimulatedLock
from drivers.sim.simulator import SetupError, Simulator, spec_from_args, spec_from_toml

KEY = bytes(range(16))
KEY_HEX = KEY.hex()
REF = b"\xab" * 16


@pytest.fixture
def server() -> ControlServer:
    eps = [
        LockEndpoint(SimulatedLock(serial=f"S{a}"), KEY, addr=a, name=f"door{a}") for a in (1, 2)
    ]
    return ControlServer(eps, "/nonexistent.sock")


def test_control_press_and_slots(server: ControlServer) -> None:
    lock = server.find("door1").lock
    lock.set_credential(SlotWrite(4, CredentialType.PIN, REF, 0, 2**32 - 1, b"55555"))
    assert server.handle({"cmd": "press", "lock": "door1", "code": "55555"}) == {
        "ok": True,
        "granted": True,
    }
    assert server.handle({"cmd": "press", "lock": 2, "code": "55555"})["granted"] is False
    ans = server.handle({"cmd": "slots", "lock": "S1"})
    assert ans["slots"] == 32 and ans["occupied"][0]["ref"] == REF.hex()
    assert "55555" not in json.dumps(ans)
    evs = server.handle({"cmd": "events", "lock": "1"})["events"]
    assert evs[0]["kind"] == EventKind.GRANTED and evs[0]["slot"] == 4


def test_control_faults_clock_battery(server: ControlServer) -> None:
    ans = server.handle({"cmd": "faults", "lock": "door2", "set": {"drop_rate": 0.5, "full": True}})
    assert ans["faults"]["drop_rate"] == 0.5 and ans["faults"]["full"] is True
    assert server.find(2).lock.faults.full
    for bad in ({"nope": 1}, {"full": 1}, {"drop_rate": 2}, {"latency_s": -1}, {"drop_rate": True}):
        assert not server.handle({"cmd": "faults", "lock": 2, "set": bad})["ok"]
    ep = server.find("door1")
    ep.lock.clock = lambda: 1000.0
    assert server.handle({"cmd": "skew", "lock": 1, "seconds": 50})["clock"] == 1050
    assert server.handle({"cmd": "reboot", "lock": 1})["clock"] == 0
    assert server.handle({"cmd": "battery", "lock": 1, "percent": 5})["battery"] == 5
    assert server.handle({"cmd": "tamper", "lock": 1})["ok"]
    kinds = [e["kind"] for e in server.handle({"cmd": "events", "lock": 1})["events"]]
    assert kinds == [EventKind.CLOCK_LOST, EventKind.LOW_BATTERY, EventKind.TAMPER]
    assert "SCHEDULE" in server.handle({"cmd": "info", "lock": 1})["info"]["caps"]


def test_control_errors(server: ControlServer) -> None:
    assert not server.handle({"cmd": "press", "lock": "x", "code": "1"})["ok"]
    assert not server.handle({"cmd": "press", "lock": 1})["ok"]  # missing code
    assert not server.handle({"cmd": "press", "lock": 1, "code": 1234})["ok"]
    assert not server.handle({"cmd": "fly"})["ok"]
    assert not server.handle({"cmd": "events", "lock": 1, "after": "x"})["ok"]
    assert server.handle_line(b"not json")["error"] == "not JSON"
    assert not server.handle_line(b"[1]")["ok"]
    assert len(server.handle({"cmd": "locks"})["locks"]) == 2


async def test_control_socket_roundtrip(tmp_path: Path) -> None:
    sock = tmp_path / "c.sock"
    ep = LockEndpoint(SimulatedLock(), KEY, name="solo")
    async with ControlServer([ep], sock):
        assert (sock.stat().st_mode & 0o077) == 0
        ans = await asyncio.to_thread(request, sock, {"cmd": "press", "code": "0000"})
        assert ans == {"ok": True, "granted": False}  # single lock: 'lock' may be omitted
    assert not sock.exists()


def test_spec_from_args() -> None:
    spec = spec_from_args(locks=3, key=KEY_HEX)
    assert [(ls.name, ls.address, ls.port) for ls in spec.locks] == [
        ("lock1", 0, None),
        ("lock2", 0, None),
        ("lock3", 0, None),
    ]
    spec = spec_from_args(addresses=[5, 6])
    assert [(ls.address, ls.port, ls.key_generated) for ls in spec.locks] == [
        (5, "bus", True),
        (6, "bus", True),
    ]
    assert spec.locks[0].key != spec.locks[1].key
    with pytest.raises(SetupError):
        spec_from_args(locks=2, addresses=[1])
    with pytest.raises(SetupError):
        spec_from_args(key="abcd")


def test_keys_file(tmp_path: Path) -> None:
    kf = tmp_path / "keys"
    kf.write_text(f"# comment\nlock1 {KEY_HEX}\n2 = {'ff' * 16}\n")
    spec = spec_from_args(addresses=[1, 2], keys_file=str(kf))
    assert [ls.key for ls in spec.locks] == [KEY, b"\xff" * 16]
    with pytest.raises(SetupError, match="no key"):
        spec_from_args(addresses=[1, 3], keys_file=str(kf))


def test_spec_from_toml_accepts_gateway_config(tmp_path: Path) -> None:
    (tmp_path / "k2").write_text("ff" * 16 + "\n")
    cfg = tmp_path / "sim.toml"
    cfg.write_text(
        f"""
[sim]
seed = 7
baud_timing = 9600

[gateway]
site_id = "x"

[[locks]]
id = "front"
door_id = "d1"
driver = "serial"
port = "{tmp_path}/bus1"
address = 1
key = "{KEY_HEX}"
pin_min = 6
schedule = false
latency_s = 0.1
[locks.faults]
ignore_clear = true

[[locks]]
name = "back"
port = "{tmp_path}/bus1"
address = 2
key_file = "k2"
caps = ["pin"]

[[locks]]
id = "ble"
door_id = "d3"
driver = "ble"
address = "AA:BB:CC:DD:EE:03"
key = "{KEY_HEX}"

[[locks]]
id = "mem"
door_id = "d4"
driver = "memory"
"""
    )
    spec = spec_from_toml(cfg)
    front, back, ble = spec.locks  # the memory lock is skipped; the BLE lock is served over BLE
    assert (ble.name, ble.mac, ble.adapter, ble.port, ble.key) == (
        "ble", "AA:BB:CC:DD:EE:03", "hci0", None, KEY)
    assert (front.name, front.address, front.pin_min, front.key) == ("front", 1, 6, KEY)
    assert not front.caps & Caps.SCHEDULE and front.faults.ignore_clear
    assert front.faults.latency_s == 0.1
    assert back.key == b"\xff" * 16 and back.caps == Caps.PIN
    assert (spec.seed, spec.baud_timing) == (7, 9600)
    assert spec.links == {f"{tmp_path}/bus1": tmp_path / "bus1"}
    bad = tmp_path / "bad.toml"
    bad.write_text('[[locks]]\nname = "a"\nslotz = 3\n')
    with pytest.raises(SetupError, match="slotz"):
        spec_from_toml(bad)


async def test_simulator_shared_port_with_link(tmp_path: Path) -> None:
    cfg = tmp_path / "sim.toml"
    cfg.write_text(
        f'[[locks]]\nname = "a"\naddress = 1\nport = "{tmp_path}/ttyA"\nkey = "{KEY_HEX}"\n'
        f'[[locks]]\nname = "b"\naddress = 2\nport = "{tmp_path}/ttyA"\nkey = "{KEY_HEX}"\n'
    )
    spec = spec_from_toml(cfg)
    spec.control = tmp_path / "ctl.sock"
    async with Simulator(spec) as sim:
        assert len(sim.buses) == 1 and sim.port_of("b") == str(tmp_path / "ttyA")
        port = serial.Serial(str(tmp_path / "ttyA"), 115200, timeout=2)
        try:
            await asyncio.to_thread(port.write, encode(Frame(2, 0, 9, Op.HELLO, 0, bytes(16))))
            data = await asyncio.to_thread(port.read_until, b"\0")
        finally:
            port.close()
        [resp] = FrameDecoder().feed(data)
        assert resp.addr == 2 and m.decode_hello_resp(resp.body).proto == 1
        assert sim.lock("b").has_session and not sim.lock("a").has_session
        locks = (await asyncio.to_thread(request, spec.control, {"cmd": "locks"}))["locks"]
        assert {lk["port"] for lk in locks} == {str(tmp_path / "ttyA")}


# --- the CLI as real processes ---------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drivers.sim", *args], capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """A `lockgw-sim serve` process with two locks on one bus; yields (lock -> pty, control)."""
    sock = str(tmp_path / "sim.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivers.sim", "serve", "--locks", "2", "--addresses", "1,2",
         "--key", KEY_HEX, "--control", sock],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ports: dict[str, str] = {}
        control = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline().strip()
            if line.startswith("pty "):
                _, _, path, *locks = line.split()
                ports.update({lk.split("@")[0]: path for lk in locks})
            elif line.startswith("control "):
                control = line.split()[1]
            elif line == "ready" or not line:
                break
        assert control and ports, proc.stderr.read() if proc.stderr else ""
        yield ports, control
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not os.path.exists(sock)


def test_cli_serve_and_press(served: tuple[dict[str, str], str]) -> None:
    ports, control = served
    assert ports["lock1"] == ports["lock2"] and ports["lock1"].startswith("/dev/")
    r = _cli("press", "--control", control, "--lock", "lock1", "1234")
    assert (r.returncode, r.stdout.strip()) == (1, "denied")
    r = _cli("press", "--control", control, "--lock", "9", "1234")
    assert r.returncode == 2 and "unknown lock" in r.stderr
    r = _cli("slots", "--control", control, "--lock", "2")
    assert (r.returncode, r.stdout) == (0, "")
    r = _cli("fault", "--control", control, "--lock", "lock2", "ignore_clear=true")
    assert r.returncode == 0 and json.loads(r.stdout)["faults"]["ignore_clear"] is True


def test_cli_provision_over_pty_then_press(served: tuple[dict[str, str], str]) -> None:
    """Write a PIN through the pty with the gateway's protocol, then grant it via `press`."""
    from drivers.locklink.session import SecureChannel, lock_proof, session_key

    ports, control = served
    ng = os.urandom(16)
    port = serial.Serial(ports["lock2"], 115200, timeout=3)
    dec = FrameDecoder()

    def exchange(frame: Frame) -> Frame:
        port.write(encode(frame))
        for _ in range(5):
            frames = dec.feed(port.read_until(b"\0"))
            if frames:
                return frames[0]
        raise AssertionError("no answer")

    try:
        hr = m.decode_hello_resp(exchange(Frame(2, 0, 1, Op.HELLO, 0, ng)).body)
        assert hr.proof == lock_proof(KEY, ng, hr.nl)
        chan = SecureChannel(session_key(KEY, ng, hr.nl), ng, side="gateway")
        now = int(time.time())
        w = SlotWrite(7, CredentialType.PIN, REF, now - 60, now + 3600, b"802211")
        req = chan.seal(Frame(2, 0, 2, Op.SET_CREDENTIAL, 0, m.encode_set_credential_req(w)))
        opened = chan.open(exchange(req))
        assert opened is not None and m.decode_status_resp(opened.body) == 0
    finally:
        port.close()
    r = _cli("press", "--control", control, "--lock", "lock2", "802211")
    assert (r.returncode, r.stdout.strip()) == (0, "granted")
    r = _cli("slots", "--control", control, "--lock", "lock2")
    assert r.stdout.startswith(f"7 pin ref={REF.hex()}") and "802211" not in r.stdout
    r = _cli("events", "--control", control, "--lock", "lock2")
    assert "kind=1 slot=7" in r.stdout


def test_cli_serve_bad_args(tmp_path: Path) -> None:
    r = _cli("serve", "--locks", "2", "--addresses", "1", "--control", str(tmp_path / "s"))
    assert r.returncode == 2 and "addresses" in r.stderr
    r = _cli("press", "1234")
    assert r.returncode == 2 and "--control" in r.stderr
