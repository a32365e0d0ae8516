"""Test harness: a private Mosquitto, a portal-side MQTT client, the gateway as a process."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A real Mosquitto on a free port with its own config and persistence directory.

    `extra` is appended to its config (e.g. a second, TLS listener).
    """

    def __init__(self, workdir: Path, *, persistence: bool = True, extra: str = "") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence {'true' if persistence else 'false'}\n"
            f"persistence_location {workdir}/\nmax_queued_messages 100000\n"
            f"user {getpass.getuser()}\n"  # as root it would switch user and lose workdir access
            "autosave_interval 1\nautosave_on_changes true\n"
            f"log_dest file {workdir}/mosquitto.log\n{extra}"
        )

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        """Stop it (SIGTERM: it saves its persistence file)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def job(type_: str, body: dict[str, Any], job_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """A job envelope as the portal sends it."""
    return {"v": 1, "job_id": job_id or uuid.uuid4().hex, "type": type_,
            "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "body": body, **extra}


def iso(dt: datetime) -> str:
    """RFC 3339 with Z."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_body(key_id: str, version: int, doors: list[str], *, code: str | None = "482913",
             allow: bool = True, reservation: str | None = None,
             valid_from: datetime | None = None, valid_until: datetime | None = None,
             smartkey: str | None = None) -> dict[str, Any]:
    """A key.upsert body."""
    now = datetime.now(UTC)
    creds: list[dict[str, Any]] = []
    if code is not None:
        creds.append({"type": "door_code", "code": code})
    if smartkey is not None:
        creds.append({"type": "smartkey", "credential_id": "sk-1", "public_key": smartkey})
    return {
        "key_id": key_id, "version": version, "label": "guest", "doors": doors,
        "credentials": creds,
        "valid_from": iso(valid_from or now - timedelta(hours=1)),
        "valid_until": iso(valid_until or now + timedelta(days=2)),
        "allow_provisioning": allow, "reservation_id": reservation,
    }


@dataclass
class Portal:
    """The portal's side of the broker: publishes jobs, records everything the gateway says."""

    port: int
    root: str
    gw: str
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    retained: dict[str, bytes] = field(default_factory=dict)
    _new: asyncio.Event = field(default_factory=asyncio.Event)
    client: aiomqtt.Client | None = None

    @property
    def gwroot(self) -> str:
        """{root}/gateways/{gw}"""
        return f"{self.root}/gateways/{self.gw}"

    async def publish(self, payload: dict[str, Any] | bytes, *, gateway_topic: bool = False,
                      retain: bool = False, topic: str | None = None) -> None:
        """Publish a job (dict → JSON) to the site or gateway jobs topic."""
        assert self.client is not None
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        t = topic or (f"{self.gwroot}/jobs" if gateway_topic else f"{self.root}/jobs")
        await self.client.publish(t, data, qos=1, retain=retain)

    def json_on(self, suffix: str) -> list[dict[str, Any]]:
        """Every JSON message received on {gwroot}/{suffix}."""
        return [json.loads(p) for t, p, _r in self.messages if t == f"{self.gwroot}/{suffix}" and p]

    def acks(self) -> dict[str | None, dict[str, Any]]:
        """job_id -> last ack."""
        return {a["job_id"]: a for a in self.json_on("acks")}

    def key_status(self, key_id: str) -> dict[str, Any] | None:
        """The last key status payload seen (None once cleared or never)."""
        data = self.retained.get(f"{self.gwroot}/keys/{key_id}")
        return json.loads(data) if data else None

    def door(self, key_id: str, door: str) -> dict[str, Any] | None:
        """The door entry of the last key status."""
        st = self.key_status(key_id)
        return None if st is None else st["doors"].get(door)

    async def wait_for(self, pred: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Wait until pred() is truthy, re-checking on every message."""
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or pred}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), timeout=min(left, 0.2))

    async def wait_ack(self, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The ack of one job."""
        result: dict[str, Any] = await self.wait_for(lambda: self.acks().get(job_id), timeout,
                                                     f"ack {job_id}")
        return result

    async def wait_door(self, key_id: str, door: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until a door of a key shows `state`."""
        def check() -> dict[str, Any] | None:
            d = self.door(key_id, door)
            return d if d is not None and d["state"] == state else None
        result: dict[str, Any] = await self.wait_for(check, timeout, f"{key_id}/{door} -> {state}")
        return result

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
            self.messages.append((str(msg.topic), payload, bool(msg.retain)))
            self.retained[str(msg.topic)] = payload
            self._new.set()


@contextlib.asynccontextmanager
async def portal(port: int, prefix: str, site: str = "site-1", gw: str = "gw-1", *,
                 identifier: str | None = None, persistent: bool = False) -> AsyncIterator[Portal]:
    """A connected Portal listening to everything the gateway publishes.

    `persistent` gives it a session that outlives a disconnect (with a fixed `identifier`), so
    it misses nothing while the broker or the portal reconnects.
    """
    p = Portal(port, f"{prefix}/sites/{site}", gw)
    ident = identifier or f"portal-{uuid.uuid4().hex[:8]}"
    async with aiomqtt.Client("127.0.0.1", port, identifier=ident,
                              clean_session=False if persistent else None) as client:
        p.client = client
        await client.subscribe(f"{p.root}/gateways/#", qos=1)
        task = asyncio.create_task(p._listen(client))
        try:
            yield p
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


def gateway_toml(state_dir: Path, port: int, prefix: str, locks: list[dict[str, Any]],
                 extra: str = "") -> str:
    """A gateway config file text."""
    out = [
        "[gateway]", 'site_id = "site-1"', 'gateway_id = "gw-1"', f'state_dir = "{state_dir}"',
        "health_interval_s = 1", 'log_level = "DEBUG"',
        "[mqtt]", 'host = "127.0.0.1"', f"port = {port}", f'topic_prefix = "{prefix}"',
        "reconnect_min_s = 0.1", "reconnect_max_s = 1",
        "[provisioning]", "backoff_initial_s = 0.05", "backoff_max_s = 0.5", "max_attempts = 3",
        "breaker_threshold = 3", "breaker_cooldown_s = 1",
    ]
    for lock in locks:
        out.append("[[locks]]")
        out.extend(f"{k} = {json.dumps(v)}" for k, v in lock.items())
    return "\n".join(out) + "\n" + extra


class GatewayProcess:
    """`lockgw run` as a real process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        """Spawn the daemon."""
        self._fh = open(self.log, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
            stdout=self._fh, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, **(env or {})},
        )

    def signal(self, sig: int) -> None:
        """Send a signal."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        """SIGKILL, no cleanup at all."""
        self.signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 20) -> int:
        """Wait for exit; the exit code."""
        assert self.proc is not None
        rc = self.proc.wait(timeout)
        self._fh.close()
        return rc

    def log_text(self) -> str:
        """Everything it printed."""
        return self.log.read_text(errors="replace")
