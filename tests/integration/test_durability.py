"""Durability with the daemon as a real process: kill -9 at failpoints, broker restarts, republish.

Memory locks live inside the daemon and lose their content with it, so results are read from
MQTT statuses, `lockgw status` and the SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import Rig
from tests.harness import REPO, Broker, GatewayProcess, Portal, gateway_toml, job, key_body, portal

ONE_LOCK = [{"id": "lock-101", "door_id": "101", "driver": "memory"}]


def spawn(tmp_path: Path, broker: Broker, prefix: str, *, failpoint: str | None = None,
          locks: list[dict[str, Any]] | None = None, extra: str = "") -> GatewayProcess:
    """Write a config and start `python -m gateway run` on it."""
    config = tmp_path / "gw.toml"
    if not config.exists():
        config.write_text(gateway_toml(tmp_path / "state", broker.port, prefix, locks or ONE_LOCK, extra))
    gp = GatewayProcess(config, tmp_path / "gateway.log")
    gp.start({"LOCKGW_FAILPOINT": failpoint} if failpoint else {"LOCKGW_FAILPOINT": ""})
    return gp


def state_of(p: Portal) -> dict[str, Any] | None:
    raw = p.retained.get(f"{p.gwroot}/state")
    return json.loads(raw) if raw else None


async def online(p: Portal, not_boot: str | None = None) -> str:
    """Wait for an online state of a new boot; its boot_id."""
    st = await p.wait_for(lambda: (s := state_of(p)) and s["state"] == "online"
                          and s["boot_id"] != not_boot and s, 20, "gateway online")
    return str(st["boot_id"])


def db_rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "gateway.db")) as db:
        return list(db.execute(sql))


def lockgw_status(config: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "gateway", "status", "--config", str(config)],
                         capture_output=True, text=True, cwd=REPO, timeout=30, check=True)
    return dict(json.loads(out.stdout))


def durable_portal(port: int, prefix: str, ident: str) -> contextlib.AbstractAsyncContextManager[Portal]:
    """A portal client with a persistent session: it misses nothing while the broker restarts."""
    return portal(port, prefix, identifier=ident, persistent=True)


@contextlib.asynccontextmanager
async def portal_at(port: int, prefix: str, ident: str, into: Portal | None = None) -> AsyncIterator[Portal]:
    """durable_portal that keeps recording into an existing Portal object (across reconnects)."""
    async with durable_portal(port, prefix, ident) as fresh:
        if into is not None:
            fresh.messages, fresh.retained = into.messages, into.retained
        yield fresh


async def test_kill_after_job_stored_loses_nothing(tmp_path: Path, broker: Broker, prefix: str) -> None:
    async with durable_portal(broker.port, prefix, f"portal-{uuid.uuid4().hex[:6]}") as p:
        gp = spawn(tmp_path, broker, prefix, failpoint="job_stored")
        boot1 = await online(p)
        j = job("key.upsert", key_body("k-1", 1, ["101"], code="48291300"))
        await p.publish(j)
        assert gp.wait() == -signal.SIGKILL  # died after storing, before the PUBACK
        will = await p.wait_for(lambda: (s := state_of(p)) and s["state"] == "offline" and s)
        assert will["boot_id"] == boot1
        assert db_rows(tmp_path, f"SELECT result FROM jobs WHERE job_id='{j['job_id']}'") == [("accepted",)]
        assert not p.acks(), "an ack left before the crash"

        gp = spawn(tmp_path, broker, prefix)
        await online(p, not_boot=boot1)
        # The broker redelivers the unacknowledged job: it is a duplicate now; the original
        # `accepted` ack comes out of the outbox.
        await p.wait_for(lambda: len([a for a in p.json_on("acks") if a["job_id"] == j["job_id"]]) >= 2,
                         15, "both acks")
        results = [a["result"] for a in p.json_on("acks") if a["job_id"] == j["job_id"]]
        assert results[0] == "accepted" and set(results[1:]) == {"duplicate"}, results
        await p.wait_door("k-1", "101", "provisioned", timeout=15)
        gp.signal(signal.SIGTERM)
        assert gp.wait() == 0
    assert db_rows(tmp_path, "SELECT count(*) FROM jobs") == [(1,)]
    assert db_rows(tmp_path, "SELECT key_id, version, revoked FROM keys") == [("k-1", 1, 0)]


async def test_kill_after_lock_written_converges_in_one_slot(tmp_path: Path, broker: Broker,
                                                             prefix: str) -> None:
    async with durable_portal(broker.port, prefix, f"portal-{uuid.uuid4().hex[:6]}") as p:
        gp = spawn(tmp_path, broker, prefix, failpoint="lock_written")
        boot1 = await online(p)
        j = job("key.upsert", key_body("k-2", 1, ["101"], code="55501234", smartkey=None))
        await p.publish(j)
        assert gp.wait() == -signal.SIGKILL
        # The write was in flight: one slot reserved, not confirmed.
        assert db_rows(tmp_path, "SELECT lock_id, key_id, cred, confirmed FROM slots") == [
            ("lock-101", "k-2", "door_code", 0)]
        gp = spawn(tmp_path, broker, prefix)
        await online(p, not_boot=boot1)
        door = await p.wait_door("k-2", "101", "provisioned", timeout=15)
        assert door["credentials"] == {"door_code": "provisioned"}
        gp.signal(signal.SIGTERM)
        assert gp.wait() == 0
    rows = db_rows(tmp_path, "SELECT lock_id, slot, key_id, cred, confirmed FROM slots")
    assert len(rows) == 1 and rows[0][2:] == ("k-2", "door_code", 1), rows
    st = lockgw_status(tmp_path / "gw.toml")
    assert st["slots"] == 1 and st["outbox"] == 0 and st["jobs"] == 1
    assert st["doors_by_state"]["provisioned"] == 1
    assert sum(st["doors_by_state"].values()) == 1
    health = st["locks"]["lock-101"]  # the last lock health the daemon published
    assert health["online"] is True and health["door_id"] == "101" and health["slots_used"] is not None


async def test_broker_restart_keeps_order_and_sessions(tmp_path: Path, broker: Broker, prefix: str) -> None:
    ident = f"portal-{uuid.uuid4().hex[:6]}"
    async with portal_at(broker.port, prefix, ident) as p:
        gp = spawn(tmp_path, broker, prefix)
        await online(p)
        await p.publish(job("key.upsert", key_body("k-live", 1, ["101"], code="60606060")))
        await p.wait_door("k-live", "101", "provisioned")
        until = datetime.now(UTC) + timedelta(seconds=3)
        await p.publish(job("key.upsert", key_body("k-exp", 1, ["101"], code="70707070",
                                                   valid_until=until)))
        await p.wait_door("k-exp", "101", "provisioned")
        await p.wait_for(lambda: p.json_on("health"), 5, "health")
        seen = len(p.messages)
        recorder = p
    broker.stop()
    # The key expires while the broker is away: its statuses wait in the outbox.
    await asyncio.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.5)
    broker.start()
    async with portal_at(broker.port, prefix, ident, into=recorder) as p:
        await p.wait_for(lambda: p.retained.get(f"{p.gwroot}/keys/k-exp") == b"", 20, "k-exp cleared")
        moves = [(e["from"], e["to"]) for e in p.json_on("events")
                 if e["type"] == "door_status" and e["key_id"] == "k-exp"]
        assert [t for _f, t in moves][-2:] == ["revoking", "expired"]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(moves)), moves  # in order
        # Every retained topic is republished after the reconnect.
        for suffix in ("state", "keys/k-live", "locks/lock-101"):
            await p.wait_for(lambda s=suffix: any(t == f"{p.gwroot}/{s}" and pl
                                                  for t, pl, _r in p.messages[seen:]), 10, suffix)
        await p.wait_for(lambda: any(h["mqtt_reconnects"] >= 1 for h in p.json_on("health")), 10,
                         "mqtt_reconnects in health")

        # Jobs published while the gateway is away are delivered when it returns.
        gp.signal(signal.SIGTERM)
        assert gp.wait() == 0
        late = [job("key.upsert", key_body(f"k-late{i}", 1, ["101"], code=f"1234567{i}")) for i in range(3)]
        for j in late:
            await p.publish(j)
        gp = spawn(tmp_path, broker, prefix)
        for j in late:
            assert (await p.wait_ack(j["job_id"], 15))["result"] == "accepted"
        for i in range(3):
            await p.wait_door(f"k-late{i}", "101", "provisioned")
        gp.signal(signal.SIGTERM)
        assert gp.wait() == 0


async def test_portal_online_triggers_republish(rig: Rig) -> None:
    p = rig.portal
    await p.publish(job("key.upsert", key_body("k-r", 1, ["101"], code="8080")))
    await p.wait_door("k-r", "101", "provisioned")
    await p.wait_for(lambda: p.retained.get(f"{p.gwroot}/locks/lock-pool"), 10, "pool health")
    retained = {t for t, _pl in rig.gw.store.retained_snapshot()} | {f"{p.gwroot}/state"}
    assert {f"{p.gwroot}/keys/k-r", f"{p.gwroot}/locks/lock-101"} <= retained
    n = len(p.messages)
    await p.publish({"state": "online"}, topic=f"{p.root}/portal/state", retain=True)

    def republished() -> bool:
        return retained <= {t for t, pl, _r in p.messages[n:] if pl}

    await p.wait_for(republished, 10, "every retained topic republished")
    await p.publish(b"", topic=f"{p.root}/portal/state", retain=True)  # clear for the next test
