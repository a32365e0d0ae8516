"""End to end over (simulated) BLE: Mosquitto, `lockgw-sim serve` as a process serving two BLE
locks on a simulated BlueZ (private system bus), the daemon as a process talking to it through
bleak's real BlueZ backend."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.sim.bluez_bus import dbus_daemon_path
from tests.harness import REPO, Broker, GatewayProcess, gateway_toml, job, key_body, portal
from tests.integration.serial_rig import sim_cli

pytestmark = pytest.mark.skipif(dbus_daemon_path() is None, reason="dbus-daemon not installed")

PIN = "482913"
LOCKS = {
    "lock-201": ("201", "AA:BB:CC:00:02:01", "0102030405060708090a0b0c0d0e0f10"),
    "lock-202": ("202", "AA:BB:CC:00:02:02", "f0e0d0c0b0a090807060504030201000"),
}


@contextlib.contextmanager
def sim_process(config: Path, control: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`lockgw-sim serve --config` as a real process; yields it and its `dbus ADDRESS`."""
    with open(log, "ab") as err:
        proc = subprocess.Popen([*sim_cli(), "serve", "--config", str(config), "--control",
                                 str(control)], stdout=subprocess.PIPE, stderr=err, cwd=REPO)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or lines[-1] != "ready":
            line = proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"lockgw-sim exited: {lines} {log.read_text()}")
            lines.append(line.strip())
        dbus = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("dbus ")]
        assert len(dbus) == 1, lines
        assert {ln.split()[2] for ln in lines if ln.startswith("ble ")} == {m for _d, m, _k in
                                                                            LOCKS.values()}
        yield proc, dbus[0]
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def cli_press(control: Path, lock: str, code: str) -> str:
    """`lockgw-sim press` as a separate process: 'granted' or 'denied'."""
    proc = await asyncio.create_subprocess_exec(
        *sim_cli(), "press", "--control", str(control), "--lock", lock, code,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    word = out.decode().strip()
    assert (proc.returncode, word) in ((0, "granted"), (1, "denied")), (proc.returncode, out, err)
    return word


async def test_ble_locks_provision_and_revoke(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """key.upsert → both BLE doors provisioned → PIN granted; key.revoke → revoked, denied."""
    locks = [{"id": lid, "door_id": door, "driver": "ble", "address": mac, "key": key}
             for lid, (door, mac, key) in LOCKS.items()]
    config = tmp_path / "gw.toml"
    config.write_text(gateway_toml(tmp_path / "state", broker.port, prefix, locks,
                                   extra="[ble]\nresponse_timeout_s = 2\n"))
    run_dir = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
    control = run_dir / f"lockgw-ble-{os.getpid()}-{id(tmp_path)}.sock"
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    with sim_process(config, control, tmp_path / "sim.log") as (_sim, dbus):
        async with portal(broker.port, prefix) as p:
            gw.start(env={"DBUS_SYSTEM_BUS_ADDRESS": dbus})
            try:
                await p.wait_for(lambda: p.retained.get(f"{p.gwroot}/state"), 30, "gateway online")
                doors = [door for door, _m, _k in LOCKS.values()]
                j = job("key.upsert", key_body("k-ble", 1, doors, code=PIN))
                await p.publish(j)
                assert (await p.wait_ack(j["job_id"], 30))["result"] == "accepted"
                for door in doors:
                    d = await p.wait_door("k-ble", door, "provisioned", 60)
                    assert d["credentials"] == {"door_code": "provisioned"}
                for lid in LOCKS:
                    assert await cli_press(control, lid, PIN) == "granted"
                    assert await cli_press(control, lid, "000000") == "denied"

                await p.publish(job("key.revoke", {"key_id": "k-ble", "version": 2}))

                def revoked() -> bool:
                    states = {(e["door_id"], e["to"]) for e in p.json_on("events")
                              if e.get("type") == "door_status" and e.get("key_id") == "k-ble"}
                    return all((door, "revoked") in states for door in doors)

                await p.wait_for(revoked, 60, "both doors revoked")
                topic = f"{p.gwroot}/keys/k-ble"
                await p.wait_for(lambda: topic in p.retained and not p.retained[topic], 60,
                                 "key status cleared")
                for lid in LOCKS:
                    assert await cli_press(control, lid, PIN) == "denied"
                assert PIN not in gw.log_text()
            finally:
                if gw.proc is not None and gw.proc.poll() is None:
                    gw.signal(15)
                    gw.wait(30)
