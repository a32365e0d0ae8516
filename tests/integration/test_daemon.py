"""`lockgw run` as a real process: signals, the will, configuration errors, env overrides, timers, secrets."""

from __future__ import annotations

import asyncio
import base64
import signal
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.harness import REPO, Broker, GatewayProcess, gateway_toml, job, key_body
from tests.integration.test_durability import ONE_LOCK, durable_portal, online, spawn, state_of

PIN = "73195824"
SK_RAW = bytes(range(7, 39))  # 32 bytes of SmartKey public key
SK_B64URL = base64.urlsafe_b64encode(SK_RAW).rstrip(b"=").decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_clean_stop_publishes_offline(tmp_path: Path, broker: Broker, prefix: str, sig: int) -> None:
    async with durable_portal(broker.port, prefix, f"portal-{uuid.uuid4().hex[:6]}") as p:
        gp = spawn(tmp_path, broker, prefix)
        boot = await online(p)
        st = state_of(p)
        assert st is not None and st["doors"] == ["101"] and st["started_at"].endswith("Z")
        gp.signal(sig)
        assert gp.wait() == 0, gp.log_text()
        try:
            off = await p.wait_for(lambda: (s := state_of(p)) and s["state"] == "offline" and s)
        except AssertionError:
            raise AssertionError(f"no offline state; daemon log:\n{gp.log_text()[-3000:]}") from None
        assert off["boot_id"] == boot and off["doors"] == ["101"]
    assert "Traceback" not in gp.log_text()


async def test_kill9_leaves_the_will(tmp_path: Path, broker: Broker, prefix: str) -> None:
    async with durable_portal(broker.port, prefix, f"portal-{uuid.uuid4().hex[:6]}") as p:
        gp = spawn(tmp_path, broker, prefix)
        boot = await online(p)
        gp.kill9()
        off = await p.wait_for(lambda: (s := state_of(p)) and s["state"] == "offline" and s, 15, "will")
        assert off["boot_id"] == boot


BAD_CONFIGS = [
    ("bad toml", "[gateway\nsite_id = 1\n", "not valid TOML"),
    ("wrong type", '[mqtt]\nport = "eighteen"\n', "mqtt.port"),
    ("out of range", "[mqtt]\nport = 70000\n", "mqtt.port"),
    ("unknown key", '[mqtt]\nhostname = "x"\n', "mqtt.hostname"),
    ("unknown section", "[mqttt]\nport = 1883\n", "mqttt"),
    ("bad lock key", '[[locks]]\nid = "l1"\ndoor_id = "d1"\ndriver = "serial"\nport = "/dev/null"\n'
                     'key = "zz"\n', "locks[0].key"),
    ("missing lock key file", '[[locks]]\nid = "l1"\ndoor_id = "d1"\ndriver = "serial"\n'
                              'port = "/dev/null"\nkey_file = "/nonexistent/k"\n', "locks[l1].key_file"),
    ("two locks one door", '[[locks]]\nid = "a"\ndoor_id = "d"\n[[locks]]\nid = "b"\ndoor_id = "d"\n',
     "door_id 'd'"),
]


@pytest.mark.parametrize(("case", "text", "names"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path, case: str, text: str, names: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    for cmd in ("run", "check-config"):
        out = subprocess.run([sys.executable, "-m", "gateway", cmd, "--config", str(config)],
                             capture_output=True, text=True, cwd=REPO, timeout=30)
        assert out.returncode == 2, (case, cmd, out.stderr)
        assert str(config) in out.stderr and names in out.stderr, (case, out.stderr)
        assert "Traceback" not in out.stderr + out.stdout, case


def test_missing_config_file(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(tmp_path / "no.toml")],
                         capture_output=True, text=True, cwd=REPO, timeout=30)
    assert out.returncode == 2 and "no.toml: file not found" in out.stderr
    assert "Traceback" not in out.stderr


async def test_env_overrides_the_file(tmp_path: Path, broker: Broker, prefix: str) -> None:
    config = tmp_path / "gw.toml"
    wrong = gateway_toml(tmp_path / "state", 1, prefix, ONE_LOCK)  # port 1: nobody listens
    config.write_text(wrong)
    async with durable_portal(broker.port, prefix, f"portal-{uuid.uuid4().hex[:6]}") as p:
        gp = GatewayProcess(config, tmp_path / "gateway.log")
        gp.start({"LOCKGW_MQTT__PORT": str(broker.port)})
        await online(p)
        gp.signal(signal.SIGTERM)
        assert gp.wait() == 0


async def test_restart_rearms_timers(tmp_path: Path, broker: Broker, prefix: str) -> None:
    async with durable_portal(broker.port, prefix, f"portal-{uuid.uuid4().hex[:6]}") as p:
        gp = spawn(tmp_path, broker, prefix)
        boot = await online(p)
        until = datetime.now(UTC) + timedelta(seconds=3)
        soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
        await p.publish(job("key.upsert", key_body("k-e", 1, ["101"], code="31313131", valid_until=until)))
        await p.publish(job("key.upsert", key_body("k-f", 1, ["101"], code="41414141", valid_until=soon)))
        await p.wait_door("k-e", "101", "provisioned")
        await p.wait_door("k-f", "101", "provisioned")
        gp.signal(signal.SIGTERM)
        assert gp.wait() == 0
        assert p.door("k-e", "101")["state"] == "provisioned"
        # valid_until passes while the daemon is down.
        await asyncio.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.5)
        gp = spawn(tmp_path, broker, prefix)
        await online(p, not_boot=boot)
        await p.wait_for(lambda: p.retained.get(f"{p.gwroot}/keys/k-e") == b"", 5, "k-e expired at start")
        events = [e["to"] for e in p.json_on("events") if e.get("key_id") == "k-e"]
        assert events[-1] == "expired"
        await p.wait_door("k-f", "101", "provisioned")  # the other key's window is still open
        gp.signal(signal.SIGTERM)
        assert gp.wait() == 0


async def test_secrets_never_leave(tmp_path: Path, broker: Broker, prefix: str) -> None:
    needles = [PIN.encode(), SK_B64URL.encode(), base64.b64encode(SK_RAW), SK_RAW.hex().encode(),
               SK_RAW.hex().upper().encode(), SK_RAW]
    locks = [{"id": "lock-101", "door_id": "101"}, {"id": "lock-pool", "door_id": "pool"}]
    async with durable_portal(broker.port, prefix, f"portal-{uuid.uuid4().hex[:6]}") as p:
        gp = spawn(tmp_path, broker, prefix, locks=locks)
        await online(p)
        await p.publish(job("reservation.upsert",
                            {"reservation_id": "R-1", "version": 1, "status": "booked"}))
        await p.publish(job("policy.update", {"version": 1, "require_checkin_before_provisioning": True,
                                              "revoke_on_checkout": True}))
        await p.publish(job("key.upsert", key_body("k-s", 1, ["101", "pool", "gym"], code=PIN,
                                                   smartkey=SK_B64URL, reservation="R-1")))
        await p.wait_door("k-s", "101", "pending_provisioning")
        await p.publish(job("reservation.upsert", {"reservation_id": "R-1", "version": 2,
                                                   "status": "checked_in"}))
        await p.wait_door("k-s", "101", "provisioned")
        await p.wait_door("k-s", "pool", "provisioned")
        # A bad job that carries the secrets: the rejection message must not echo them.
        bad = key_body("k-s", 2, ["101"], code=PIN, smartkey=SK_B64URL)
        bad["valid_until"] = bad["valid_from"]
        await p.publish(job("key.upsert", bad, job_id="bad-1"))
        await p.wait_ack("bad-1")
        await p.publish(job("lock.reconcile", {}), gateway_topic=True)
        await p.publish(job("key.upsert", key_body("k-s", 3, ["101"], code=PIN, smartkey=SK_B64URL)))
        await p.wait_door("k-s", "pool", "revoked")
        # Files while the daemon runs (the WAL holds recent pages).
        state = tmp_path / "state"
        files = {f.name: f.read_bytes() for f in state.iterdir() if f.name.startswith("gateway.db")}
        assert "gateway.db-wal" in files
        await p.publish(job("key.revoke", {"key_id": "k-s", "version": 4}))
        await p.wait_for(lambda: p.retained.get(f"{p.gwroot}/keys/k-s") == b"", 10, "revoked")
        gp.signal(signal.SIGTERM)
        assert gp.wait() == 0
    files |= {f"{f.name} (after)": f.read_bytes() for f in state.iterdir() if f.name.startswith("gateway.db")}
    files["log"] = gp.log_text().encode()
    assert len(p.messages) > 10
    files["mqtt"] = b"\n".join(t.encode() + b" " + pl for t, pl, _r in p.messages)
    for name, data in files.items():
        for needle in needles:
            assert needle not in data, f"secret {needle[:4]!r}… found in {name}"
    assert b"key.upsert: accepted" in files["log"]  # the log did record the work
    key_file = state / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
