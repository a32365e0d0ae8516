"""Shared pieces of the gateway benchmarks: a private broker, the daemon as a process, a portal client.

Every bench starts its own Mosquitto (tests.harness.Broker, persistence off so the broker's own
disk writes are not part of any figure) and runs `python -m gateway run --config …` as a separate
process with memory locks, so the bench client never shares the daemon's event loop.

Run as a script, this module is the bare echo client of bench_jobs.py:
    python bench/common.py echo PORT IN_TOPIC OUT_TOPIC
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.harness import Broker, job, key_body  # noqa: E402

__all__ = ["Broker", "job", "key_body"]

PREFIX = "bench/v1"
SITE = "site-1"
GW = "gw-1"
ROOT = f"{PREFIX}/sites/{SITE}"
GWROOT = f"{ROOT}/gateways/{GW}"


# --- statistics -----------------------------------------------------------------------------
def median(xs: list[float]) -> float:
    """The median."""
    return float(statistics.median(xs))


def pct(xs: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of a sample."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


# --- the broker and the daemon --------------------------------------------------------------
@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    """A scratch directory on the same disk as /tmp (SQLite's fsyncs are real there)."""
    d = Path(tempfile.mkdtemp(prefix="lockgw-bench-"))
    try:
        yield d
    finally:
        if not keep:
            subprocess.run(["rm", "-rf", str(d)], check=False)


@contextlib.contextmanager
def broker(base: Path, nodelay: bool = True) -> Iterator[Broker]:
    """A private Mosquitto on a free port (no persistence: only the gateway's disk work is timed)."""
    b = Broker(base / "broker", persistence=False)
    if nodelay:
        # Mosquitto's default leaves Nagle on: a small message behind an unacknowledged one waits
        # for the peer's delayed ACK (~40 ms on Linux). Deployments should set this too.
        b.conf.write_text(b.conf.read_text() + "set_tcp_nodelay true\n")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def memory_locks(n: int, *, slots: int = 256, latency_s: float = 0.0) -> list[dict[str, Any]]:
    """n memory locks: lock-00000 on door d00000, …"""
    return [
        {"id": f"lock-{i:05d}", "door_id": f"d{i:05d}", "driver": "memory", "slots": slots,
         "latency_s": latency_s}
        for i in range(n)
    ]


def write_config(base: Path, port: int, locks: list[dict[str, Any]], *,
                 log_level: str = "INFO", extra: str = "") -> Path:
    """A production-like gateway config (default provisioning tuning, INFO logs to a file)."""
    out = [
        "[gateway]", f'site_id = "{SITE}"', f'gateway_id = "{GW}"',
        f'state_dir = "{base / "state"}"', f'log_level = "{log_level}"',
        "[mqtt]", 'host = "127.0.0.1"', f"port = {port}", f'topic_prefix = "{PREFIX}"',
        "max_payload_bytes = 268435455",
    ]
    for lock in locks:
        out.append("[[locks]]")
        out.extend(f"{k} = {json.dumps(v)}" for k, v in lock.items())
    path = base / "gw.toml"
    path.write_text("\n".join(out) + "\n" + extra)
    return path


class Daemon:
    """`python -m gateway run --config …` as its own process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn it."""
        self._fh = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
            stdout=self._fh, stderr=subprocess.STDOUT, cwd=REPO,
        )

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        assert self.proc is not None
        return self.proc.pid

    def status(self, field: str) -> int:
        """A kB figure (VmRSS, VmHWM, …) from /proc/PID/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def cpu_s(self) -> float:
        """User + system CPU seconds the daemon has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM and wait (it drains its outbox first)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._fh.close()

    def check_alive(self) -> None:
        """Fail loudly if the daemon died."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SystemExit(f"gateway exited with {self.proc.returncode}; see {self.log}")


@contextlib.contextmanager
def daemon(config: Path, log: Path) -> Iterator[Daemon]:
    """A running daemon, stopped afterwards."""
    d = Daemon(config, log)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def nodelay(client: aiomqtt.Client) -> None:
    """TCP_NODELAY on a connected client (paho leaves Nagle on: ~40 ms stalls on small messages)."""
    sock = client._client.socket()
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# --- the portal side ------------------------------------------------------------------------
class Portal:
    """One aiomqtt client; every message goes to `on_message(topic, payload)` as it arrives."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.handlers: list[Callable[[str, bytes], None]] = []
        self.changed = asyncio.Event()

    async def publish(self, topic: str, payload: dict[str, Any] | bytes, retain: bool = False) -> None:
        """Publish QoS 1 and wait for the broker's PUBACK."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.client.publish(topic, data, qos=1, retain=retain)

    async def publish_all(self, topic: str, payloads: list[bytes], window: int = 200) -> None:
        """Publish many, `window` at a time (aiomqtt's per-publish bookkeeping is O(pending))."""
        for i in range(0, len(payloads), window):
            await asyncio.gather(
                *(self.client.publish(topic, p, qos=1) for p in payloads[i : i + window])
            )

    async def wait_for(self, pred: Callable[[], Any], timeout: float, what: str) -> Any:
        """Wait until pred() is truthy, re-checking after every message."""
        deadline = time.monotonic() + timeout
        while not (value := pred()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"timed out waiting for {what}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
        return value

    async def _listen(self) -> None:
        async for msg in self.client.messages:
            payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
            topic = str(msg.topic)
            for h in self.handlers:
                h(topic, payload)
            self.changed.set()


@contextlib.asynccontextmanager
async def portal(port: int, subscriptions: list[str]) -> AsyncIterator[Portal]:
    """A connected Portal subscribed (QoS 1) to `subscriptions`."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-{uuid.uuid4().hex[:8]}",
                              timeout=60) as client:
        client.pending_calls_threshold = 1 << 30  # many publishes in flight is the point here
        nodelay(client)
        p = Portal(client)
        if subscriptions:
            await client.subscribe([(t, 1) for t in subscriptions])
        task = asyncio.create_task(p._listen())
        try:
            yield p
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


class GatewayWatch:
    """What the gateway published: online state, acks by job id, latest key statuses, lock health."""

    def __init__(self, portal: Portal) -> None:
        self.online = False
        self.acks: dict[str, str] = {}  # job_id -> result
        self.keys: dict[str, dict[str, Any]] = {}  # key_id -> latest key status
        self.locks: set[str] = set()  # lock ids with a retained health message
        self.on_key: Callable[[str, dict[str, Any]], None] | None = None
        self.waiting_acks: set[str] = set()  # job ids still expected (cheap to test after each message)
        self.waiting_keys: dict[str, str] = {}  # key_id -> the state every door must show
        portal.handlers.append(self._on)

    def expect(self, job_ids: list[str], keys: dict[str, str] | None = None) -> None:
        """Start waiting for these acks and key states (see `done_acks`, `done_keys`)."""
        self.waiting_acks = set(job_ids) - set(self.acks)
        self.waiting_keys = {k: s for k, s in (keys or {}).items() if self.door_states(k) != {s}}

    def _on(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(GWROOT + "/"):
            return
        sub = topic[len(GWROOT) + 1:]
        if sub == "acks":
            ack = json.loads(payload)
            self.acks[ack["job_id"]] = ack["result"]
            self.waiting_acks.discard(ack["job_id"])
        elif sub.startswith("keys/"):
            if payload:
                st = json.loads(payload)
                self.keys[st["key_id"]] = st
                want = self.waiting_keys.get(st["key_id"])
                if want is not None and {d["state"] for d in st["doors"].values()} == {want}:
                    del self.waiting_keys[st["key_id"]]
                if self.on_key is not None:
                    self.on_key(st["key_id"], st)
        elif sub.startswith("locks/"):
            self.locks.add(sub[6:])
        elif sub == "state":
            self.online = bool(payload) and json.loads(payload).get("state") == "online"

    def door_states(self, key_id: str) -> set[str]:
        """The states of every door of a key's latest status."""
        st = self.keys.get(key_id)
        return set() if st is None else {d["state"] for d in st["doors"].values()}


GW_TOPICS = [f"{GWROOT}/state", f"{GWROOT}/acks", f"{GWROOT}/keys/+", f"{GWROOT}/locks/+"]


# --- the bare echo client (a separate process) ----------------------------------------------
async def _echo(port: int, topic_in: str, topic_out: str) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"echo-{uuid.uuid4().hex[:8]}") as c:
        c.pending_calls_threshold = 1 << 30
        nodelay(c)
        await c.subscribe(topic_in, qos=1)
        print("ready", flush=True)
        tasks: set[asyncio.Task[None]] = set()
        async for msg in c.messages:
            payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
            t = asyncio.create_task(c.publish(topic_out, payload, qos=1))  # pipelined, like the relay
            tasks.add(t)
            t.add_done_callback(tasks.discard)


@contextlib.contextmanager
def echo_process(port: int, topic_in: str, topic_out: str) -> Iterator[subprocess.Popen[bytes]]:
    """The echo client running in its own process, subscribed when this yields."""
    proc = subprocess.Popen([sys.executable, __file__, "echo", str(port), topic_in, topic_out],
                            stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise SystemExit("echo client did not start")
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "echo":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_echo(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
