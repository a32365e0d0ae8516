"""Serve a SimBus on a pseudo-terminal, so the daemon can open the simulated locks with pyserial."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from pathlib import Path
from types import TracebackType

from drivers.sim.lockside import LockEndpoint, SimBus

log = logging.getLogger(__name__)

BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop
MAX_PENDING_OUT = 64 * 1024  # like a UART FIFO overrun: beyond this, answers are lost
_READ_SIZE = 4096


class PtyBus:
    """A SimBus served on the master side of a pty; `.path` is the slave device to open."""

    def __init__(
        self,
        bus: SimBus,
        *,
        baud_timing: int | None = None,
        link: str | os.PathLike[str] | None = None,
        name: str = "bus",
    ) -> None:
        if baud_timing is not None and baud_timing <= 0:
            raise ValueError("baud_timing must be positive")
        self.bus = bus
        self.name = name
        self.baud_timing = baud_timing
        self.link = Path(link) if link is not None else None
        self.path = ""
        self._master = -1
        self._slave = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out = bytearray()
        self._writing = False
        self._tx_free_at = 0.0
        self._timers: set[asyncio.TimerHandle] = set()
        self.bytes_in = 0
        self.bytes_out = 0
        self.overruns = 0

    @property
    def endpoints(self) -> list[LockEndpoint]:
        """The locks on this bus."""
        return self.bus.endpoints

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._master >= 0

    async def start(self) -> None:
        """Open the pty (slave in raw mode) and start serving."""
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            os.set_blocking(master, False)
            self.path = os.ttyname(slave)
            if self.link is not None:
                self._make_link()
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        # keeping our own slave fd open means the master never sees EIO when a client closes
        self._master, self._slave = master, slave
        self._loop.add_reader(master, self._on_readable)
        log.info("pty bus %s serving %d lock(s) on %s", self.name, len(self.endpoints), self.path)

    def _make_link(self) -> None:
        """Point the symlink `link` at the slave device (replacing a stale symlink)."""
        assert self.link is not None
        if self.link.is_symlink():
            self.link.unlink()
        elif self.link.exists():
            raise FileExistsError(f"{self.link} exists and is not a symlink")
        self.link.parent.mkdir(parents=True, exist_ok=True)
        self.link.symlink_to(self.path)

    async def stop(self) -> None:
        """Stop serving and close the pty (clients see the port vanish)."""
        if not self.running:
            return
        assert self._loop is not None
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._loop.remove_reader(self._master)
        if self._writing:
            self._loop.remove_writer(self._master)
            self._writing = False
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1
        self._out.clear()
        if self.link is not None and self.link.is_symlink():
            with contextlib.suppress(OSError):
                if os.readlink(self.link) == self.path:
                    self.link.unlink()

    async def __aenter__(self) -> PtyBus:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _wire_time(self, n: int) -> float:
        """Seconds `n` bytes take on the emulated line (0 without baud timing)."""
        return n * BITS_PER_BYTE / self.baud_timing if self.baud_timing else 0.0

    def _on_readable(self) -> None:
        """Bytes from the gateway: feed the bus and schedule the answers."""
        try:
            data = os.read(self._master, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # should not happen while we hold the slave open
            log.warning("pty bus %s: read failed: %s", self.name, exc)
            return
        if not data:
            return
        self.bytes_in += len(data)
        assert self._loop is not None
        now = self._loop.time()
        rx_done = now + self._wire_time(len(data))
        for delay, wire in self.bus.feed(data):
            start = max(rx_done + delay, self._tx_free_at)
            due = start + self._wire_time(len(wire))
            if self.baud_timing:
                self._tx_free_at = due  # the line is busy until this answer is out
            self._schedule(due - now, wire)

    def _schedule(self, delay: float, wire: bytes) -> None:
        """Write `wire` after `delay` seconds (now when not positive)."""
        if delay <= 0:
            self._send(wire)
            return
        assert self._loop is not None
        holder: list[asyncio.TimerHandle] = []

        def fire() -> None:
            self._timers.discard(holder[0])
            self._send(wire)

        timer = self._loop.call_later(delay, fire)
        holder.append(timer)
        self._timers.add(timer)

    def _send(self, wire: bytes) -> None:
        """Queue bytes to the gateway and write what the pty takes now."""
        if not self.running:
            return
        if len(self._out) + len(wire) > MAX_PENDING_OUT:
            self.overruns += 1
            return
        self._out += wire
        self._flush()

    def _flush(self) -> None:
        """Write queued bytes; wait for writability when the pty buffer is full."""
        assert self._loop is not None
        while self._out:
            try:
                n = os.write(self._master, self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("pty bus %s: write failed: %s", self.name, exc)
                self._out.clear()
                break
            self.bytes_out += n
            del self._out[:n]
        if self._out and not self._writing:
            self._loop.add_writer(self._master, self._flush)
            self._writing = True
        elif not self._out and self._writing:
            self._loop.remove_writer(self._master)
            self._writing = False
