"""Serial end-to-end rig: real Mosquitto, the daemon as a process, simulated LockLink locks on ptys.

Three locks share one multi-drop pty bus (addresses 1..3); optionally a fourth sits alone on its
own pty at address 0. The simulator runs either in this event loop (`Simulator`) or as a real
`lockgw-sim serve` process; both serve the gateway's own config file and a JSON control socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.sim.control import request
from drivers.sim.model import SimulatedLock
from drivers.sim.simulator import Simulator, spec_from_toml
from tests.harness import REPO, Broker, GatewayProcess, Portal, gateway_toml, portal

BUS_LOCKS = {"lock-101": ("101", 1), "lock-102": ("102", 2), "lock-103": ("103", 3)}
SOLO_LOCK = ("lock-pool", "pool")
PROVISIONING = {"events_interval_s": 10, "max_attempts": 5}
SERIAL = {"response_timeout_s": 1.0, "tries": 4}


def lock_key(lock_id: str) -> str:
    """A distinct, deterministic 16-byte lock key per lock (hex)."""
    return (lock_id.encode().hex() * 4)[:32]


def smartkey_pub(seed: int = 7) -> tuple[bytes, str]:
    """A 32-byte 'public key' and its base64url form as the portal sends it."""
    raw = bytes((seed + i) % 256 for i in range(32))
    return raw, base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sim_cli() -> list[str]:
    """How to run the `lockgw-sim` console script."""
    exe = shutil.which("lockgw-sim") or str(Path(sys.executable).parent / "lockgw-sim")
    return [exe] if Path(exe).exists() else [sys.executable, "-m", "drivers.sim"]


def rig_config(tmp: Path, broker: Broker, prefix: str, *, solo: bool,
               overrides: dict[str, dict[str, Any]], provisioning: dict[str, Any],
               serial: dict[str, Any]) -> str:
    """The gateway config: every lock is a serial LockLink lock on a simulator pty symlink."""
    locks = [
        {"id": lid, "door_id": door, "driver": "serial", "port": str(tmp / "dev" / "bus"),
         "address": addr, "key": lock_key(lid)}
        for lid, (door, addr) in BUS_LOCKS.items()
    ]
    if solo:
        lid, door = SOLO_LOCK
        locks.append({"id": lid, "door_id": door, "driver": "serial",
                      "port": str(tmp / "dev" / "solo"), "address": 0, "key": lock_key(lid)})
    for lock in locks:
        lock.update(overrides.get(str(lock["id"]), {}))
    serial_lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in serial.items())
    text = gateway_toml(tmp / "state", broker.port, prefix, locks, f"[serial]\n{serial_lines}")
    for k, v in provisioning.items():
        line = f"{k} = {json.dumps(v)}"
        text, n = re.subn(rf"(?m)^{k} = .*$", line, text)
        if not n:
            text = text.replace("[provisioning]\n", f"[provisioning]\n{line}\n", 1)
    return text


@dataclass
class SerialRig:
    """The running rig and helpers to act on the locks and read what the gateway published."""

    portal: Portal
    gw: GatewayProcess
    config: Path
    control: Path
    sim: Simulator | None = None  # in-process simulator, if that mode was chosen
    sim_proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    # --- the simulator ------------------------------------------------------------------
    async def ctl(self, lock: str | None, cmd: str, **kw: Any) -> dict[str, Any]:
        """One control-socket request (off the event loop: the simulator may live in it)."""
        req = {"cmd": cmd, **({"lock": lock} if lock else {}), **kw}
        ans = await asyncio.to_thread(request, self.control, req, timeout=10.0)
        assert ans.get("ok"), f"control {req}: {ans}"
        return ans

    async def press(self, lock: str, code: str) -> bool:
        """Type a PIN on a lock's keypad."""
        return bool((await self.ctl(lock, "press", code=code))["granted"])

    async def present(self, lock: str, public_key: bytes) -> bool:
        """Present a SmartKey at a lock."""
        return bool((await self.ctl(lock, "smartkey", key=public_key.hex()))["granted"])

    async def slots(self, lock: str) -> list[dict[str, Any]]:
        """The occupied slots of a lock (refs and digests, never secrets)."""
        return list((await self.ctl(lock, "slots"))["occupied"])

    async def fault(self, lock: str, **faults: Any) -> None:
        """Set faults on a lock."""
        await self.ctl(lock, "faults", set=faults)

    async def lock_clock(self, lock: str) -> int:
        """The lock's clock (UTC seconds)."""
        return int((await self.ctl(lock, "info"))["info"]["clock"])

    def model(self, lock: str) -> SimulatedLock:
        """Direct access to a simulated lock (in-process mode only)."""
        assert self.sim is not None, "needs the in-process simulator"
        return self.sim.lock(lock).lock

    # --- what the gateway said ------------------------------------------------------------
    def events(self, type_: str, **match: Any) -> list[dict[str, Any]]:
        """Events of one type whose fields equal `match`."""
        return [e for e in self.portal.json_on("events")
                if e.get("type") == type_ and all(e.get(k) == v for k, v in match.items())]

    async def wait_event(self, type_: str, timeout: float = 30.0, after: int = 0,
                         **match: Any) -> dict[str, Any]:
        """Wait for an event of `type_` matching `match` (ignoring the first `after` such events)."""
        def found() -> dict[str, Any] | None:
            hits = self.events(type_, **match)
            return hits[after] if len(hits) > after else None
        result: dict[str, Any] = await self.portal.wait_for(found, timeout, f"{type_} {match}")
        return result

    def health(self, lock_id: str) -> dict[str, Any] | None:
        """The last retained lock health."""
        data = self.portal.retained.get(f"{self.portal.gwroot}/locks/{lock_id}")
        return json.loads(data) if data else None

    async def wait_health(self, lock_id: str, pred: Callable[[dict[str, Any]], bool],
                          timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the lock health satisfies `pred`."""
        def check() -> dict[str, Any] | None:
            h = self.health(lock_id)
            return h if h is not None and pred(h) else None
        result: dict[str, Any] = await self.portal.wait_for(check, timeout, f"health {lock_id}")
        return result

    async def wait_door(self, key_id: str, door: str, state: str,
                        timeout: float = 30.0) -> dict[str, Any]:
        """Wait until a door of a key shows `state` (generous default timeout)."""
        return await self.portal.wait_door(key_id, door, state, timeout)

    async def wait_cleared(self, key_id: str, timeout: float = 30.0) -> None:
        """Wait until the key's retained status was cleared (fully revoked/expired)."""
        topic = f"{self.portal.gwroot}/keys/{key_id}"
        await self.portal.wait_for(lambda: topic in self.portal.retained
                                   and not self.portal.retained[topic], timeout, f"{key_id} cleared")

    async def until(self, check: Callable[[], Awaitable[Any]], timeout: float = 30.0,
                    what: str = "") -> Any:
        """Poll an async check (e.g. the lock's slots) until it is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = await check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or check}")
            await asyncio.sleep(0.2)

    # --- the daemon -------------------------------------------------------------------------
    def start_gateway(self, env: dict[str, str] | None = None) -> None:
        """(Re)start the daemon process."""
        self.gw.start({**self.env, **(env or {})})

    async def stop_gateway(self) -> None:
        """SIGTERM and wait."""
        if self.gw.proc is not None and self.gw.proc.poll() is None:
            self.gw.proc.terminate()
            await asyncio.to_thread(self.gw.wait, 30)


async def _start_sim_process(config: Path, control: Path, log: Path) -> subprocess.Popen[bytes]:
    """`lockgw-sim serve --config` as a real process; returns once it printed its ready line."""
    proc = subprocess.Popen(
        [*sim_cli(), "serve", "--config", str(config), "--control", str(control), "--json"],
        stdout=subprocess.PIPE, stderr=open(log, "ab"), cwd=REPO,  # noqa: SIM115
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
    if not line:
        proc.kill()
        raise RuntimeError(f"lockgw-sim did not start: {log.read_text()}")
    ready = json.loads(line)
    assert ready["control"] == str(control), ready
    return proc


@contextlib.asynccontextmanager
async def serial_rig(
    tmp: Path, broker: Broker, prefix: str, *, solo: bool = False, process: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None, provisioning: dict[str, Any] | None = None,
    serial: dict[str, Any] | None = None, env: dict[str, str] | None = None,
    before: Callable[[SerialRig], Awaitable[None]] | None = None, wait_online: bool = True,
) -> AsyncIterator[SerialRig]:
    """Start simulator, portal and daemon; `before` runs once the simulator is up, before the daemon."""
    config = tmp / "gw.toml"
    config.write_text(rig_config(tmp, broker, prefix, solo=solo, overrides=overrides or {},
                                 provisioning={**PROVISIONING, **(provisioning or {})},
                                 serial={**SERIAL, **(serial or {})}))
    control = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"lockgw-e2e-{os.getpid()}-{id(tmp)}.sock"
    sim: Simulator | None = None
    proc: subprocess.Popen[bytes] | None = None
    if process:
        proc = await _start_sim_process(config, control, tmp / "sim.log")
    else:
        spec = spec_from_toml(config)
        spec.control = control
        spec.seed = None
        sim = Simulator(spec)
        await sim.start()
    gwp = GatewayProcess(config, tmp / "gateway.log")
    ok = False
    try:
        async with portal(broker.port, prefix) as p:
            rig = SerialRig(p, gwp, config, control, sim, proc, dict(env or {}))
            if before is not None:
                await before(rig)
            rig.start_gateway()
            await p.wait_for(lambda: p.retained.get(f"{p.gwroot}/state"), 30, "gateway online")
            if wait_online:
                for lid in [*BUS_LOCKS, *([SOLO_LOCK[0]] if solo else [])]:
                    await rig.wait_health(lid, lambda h: h["online"], 45)
            try:
                yield rig
                ok = True
            finally:
                await rig.stop_gateway()
    finally:
        if proc is not None:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 10)
        if sim is not None:
            await sim.stop()
        if not ok and gwp.log.exists():  # shown by pytest on failure only
            print("---- gateway log (tail) ----\n" + "\n".join(gwp.log_text().splitlines()[-150:]))
