"""JSON-lines control socket, so a running simulator can be driven from another process.

One request per line, one answer per line:
    → {"cmd": "press", "lock": "front", "code": "1234"}
    ← {"ok": true, "granted": true}
    ← {"ok": false, "error": "unknown lock 'x'"}
`lock` is a lock name, its serial, or its bus address (when unique). Commands: see COMMANDS.
Answers never carry secrets (slots report refs and digests only).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from drivers.sim.lockside import LockEndpoint
from drivers.sim.model import Faults

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
Json = dict[str, Any]


class ControlError(Exception):
    """A control request failed (bad request, unknown lock, connection problem)."""


def _arg(req: Json, key: str, kind: type | tuple[type, ...]) -> Any:
    """Return req[key] checked against `kind` (bool is never accepted as a number)."""
    if key not in req:
        raise ControlError(f"missing '{key}'")
    v = req[key]
    if isinstance(v, bool) and kind is not bool:
        raise ControlError(f"'{key}' has the wrong type")
    if not isinstance(v, kind):
        raise ControlError(f"'{key}' has the wrong type")
    return v


class ControlServer:
    """Serves the control protocol for a set of simulated locks on a unix socket."""

    def __init__(
        self,
        endpoints: Iterable[LockEndpoint],
        path: str | os.PathLike[str],
        *,
        ports: Json | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.path = Path(path)
        self.ports = ports or {}  # lock name -> pty path, reported by `locks`
        self._server: asyncio.AbstractServer | None = None
        self._commands: dict[str, Callable[[Json], Json]] = {
            "ping": lambda _r: {},
            "locks": self._locks,
            "info": self._info,
            "press": self._press,
            "smartkey": self._smartkey,
            "slots": self._slots,
            "events": self._events,
            "skew": self._skew,
            "set_time": self._set_time,
            "reboot": self._reboot,
            "faults": self._faults,
            "battery": self._battery,
            "tamper": self._tamper,
            "door_left_open": self._door_left_open,
        }

    @property
    def commands(self) -> list[str]:
        """Names of the supported commands."""
        return sorted(self._commands)

    async def start(self) -> None:
        """Bind the socket (owner-only permissions) and start serving."""
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise FileExistsError(f"{self.path} exists and is not a socket")
            self.path.unlink()  # stale socket of an earlier run
        self._server = await asyncio.start_unix_server(
            self._client, path=str(self.path), limit=MAX_LINE
        )
        os.chmod(self.path, 0o600)  # owner only: the socket can rewrite lock state

    async def stop(self) -> None:
        """Stop serving and remove the socket file."""
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer request lines until the client hangs up."""
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # line longer than MAX_LINE
                    writer.write(b'{"ok": false, "error": "line too long"}\n')
                    break
                if not line:
                    break
                writer.write(json.dumps(self.handle_line(line)).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def handle_line(self, line: bytes) -> Json:
        """Decode one JSON request line and answer it."""
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return {"ok": False, "error": "not JSON"}
        if not isinstance(req, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        return self.handle(req)

    def handle(self, req: Json) -> Json:
        """Answer one request object."""
        cmd = req.get("cmd")
        fn = self._commands.get(cmd) if isinstance(cmd, str) else None
        if fn is None:
            return {"ok": False, "error": f"unknown cmd {cmd!r}; one of {', '.join(self.commands)}"}
        try:
            return {"ok": True, **fn(req)}
        except (ControlError, ValueError, TypeError) as exc:
            return {"ok": False, "error": str(exc)}

    def find(self, which: object) -> LockEndpoint:
        """The lock named `which` (name, serial, or unique bus address)."""
        for ep in self.endpoints:
            if which in (ep.name, ep.lock.serial):
                return ep
        addr: int | None = None
        if isinstance(which, int) and not isinstance(which, bool):
            addr = which
        elif isinstance(which, str) and which.isdigit():
            addr = int(which)
        if addr is not None:
            hits = [ep for ep in self.endpoints if ep.addr == addr]
            if len(hits) == 1:
                return hits[0]
            if hits:
                raise ControlError(f"address {addr} is used on several buses; use the lock name")
        if which is None and len(self.endpoints) == 1:
            return self.endpoints[0]
        raise ControlError(f"unknown lock {which!r}")

    def _ep(self, req: Json) -> LockEndpoint:
        return self.find(req.get("lock"))

    # -- commands ----------------------------------------------------------------------

    def _locks(self, _req: Json) -> Json:
        return {
            "locks": [
                {
                    "name": ep.name,
                    "addr": ep.addr,
                    "serial": ep.lock.serial,
                    "port": self.ports.get(ep.name),
                    "session": ep.has_session,
                }
                for ep in self.endpoints
            ]
        }

    def _info(self, req: Json) -> Json:
        ep = self._ep(req)
        info = dataclasses.asdict(ep.lock.info())
        info["caps"] = [c.name for c in type(ep.lock.caps) if c in ep.lock.caps]
        return {"info": info, "faults": dataclasses.asdict(ep.lock.faults), "stats": dict(ep.stats)}

    def _press(self, req: Json) -> Json:
        ep = self._ep(req)
        return {"granted": ep.lock.press_pin(str(_arg(req, "code", str)))}

    def _smartkey(self, req: Json) -> Json:
        ep = self._ep(req)
        try:
            key = bytes.fromhex(_arg(req, "key", str))
        except ValueError:
            raise ControlError("'key' must be hex") from None
        return {"granted": ep.lock.present_smartkey(key)}

    def _slots(self, req: Json) -> Json:
        lock = self._ep(req).lock
        count, occupied = lock.list_slots()
        out = []
        for n in sorted(occupied):
            _status, c = lock.get_credential(n)
            assert c is not None
            out.append(
                {
                    "slot": n,
                    "type": c.type,
                    "ref": c.ref.hex(),
                    "valid_from": c.valid_from,
                    "valid_until": c.valid_until,
                    "digest": c.digest.hex(),
                }
            )
        return {"slots": count, "occupied": out}

    def _events(self, req: Json) -> Json:
        lock = self._ep(req).lock
        after = int(req.get("after", 0))
        max_count = int(req.get("max", 100))
        evs = lock.read_events(after, max_count)
        return {
            "events": [
                {
                    "id": e.id,
                    "time": e.time,
                    "kind": int(e.kind),
                    "slot": e.slot,
                    "ref": e.ref.hex(),
                }
                for e in evs
            ]
        }

    def _skew(self, req: Json) -> Json:
        lock = self._ep(req).lock
        lock.skew_s = float(_arg(req, "seconds", (int, float)))
        return {"clock": lock.now()}

    def _set_time(self, req: Json) -> Json:
        lock = self._ep(req).lock
        return {"status": int(lock.set_time(_arg(req, "time", int))), "clock": lock.now()}

    def _reboot(self, req: Json) -> Json:
        ep = self._ep(req)
        ep.reboot()
        return {"clock": ep.lock.now()}

    def _faults(self, req: Json) -> Json:
        lock = self._ep(req).lock
        updates = req.get("set", {})
        if not isinstance(updates, dict):
            raise ControlError("'set' must be an object")
        lock.faults = apply_faults(lock.faults, updates)
        return {"faults": dataclasses.asdict(lock.faults)}

    def _battery(self, req: Json) -> Json:
        lock = self._ep(req).lock
        lock.set_battery(_arg(req, "percent", int))
        return {"battery": lock.battery}

    def _tamper(self, req: Json) -> Json:
        self._ep(req).lock.tamper()
        return {}

    def _door_left_open(self, req: Json) -> Json:
        self._ep(req).lock.door_left_open()
        return {}


def apply_faults(faults: Faults, updates: Json) -> Faults:
    """Return `faults` with `updates` applied, checking names, types and ranges."""
    fields = {f.name: f for f in dataclasses.fields(Faults)}
    values = dataclasses.asdict(faults)
    for name, v in updates.items():
        if name not in fields:
            raise ControlError(f"unknown fault {name!r}; one of {', '.join(fields)}")
        if isinstance(values[name], bool):
            if not isinstance(v, bool):
                raise ControlError(f"fault {name!r} takes true/false")
        elif isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ControlError(f"fault {name!r} takes a non-negative number")
        elif name.endswith("_rate") and v > 1:
            raise ControlError(f"fault {name!r} is a fraction 0..1")
        values[name] = v if isinstance(v, bool) else float(v)
    return Faults(**values)


def request(path: str | os.PathLike[str], req: Json, *, timeout: float = 5.0) -> Json:
    """Send one request to a control socket and return the answer (blocking client)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(os.fspath(path))
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError as exc:
        raise ControlError(f"control socket {os.fspath(path)}: {exc}") from None
    try:
        answer = json.loads(buf)
    except ValueError:
        raise ControlError("control socket sent no valid answer") from None
    if not isinstance(answer, dict):
        raise ControlError("control socket sent no valid answer")
    return answer
