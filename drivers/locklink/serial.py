"""LockLink over a serial line (UART / RS-485 multi-drop): one SerialBus per port."""

from __future__ import annotations

import asyncio
import logging
import os

import serial as pyserial
import serial_asyncio_fast

from drivers.base import LockDriver, LockFaultError, LockOfflineError
from drivers.locklink.driver import LockLinkDriver
from drivers.locklink.frame import Frame, FrameDecoder, FrameError, encode
from drivers.locklink.link import FrameLink
from gateway.config import ConfigError, LockConfig, SerialSection

log = logging.getLogger(__name__)

BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop
CLOSE_WAIT_S = 2.0  # bound on waiting for the transport to finish closing
_BUSES: set[SerialBus] = set()  # buses with an open port, for close_buses()


class _Protocol(asyncio.Protocol):
    """Feeds received bytes to the bus's decoder; reports a lost port."""

    def __init__(self, bus: SerialBus) -> None:
        self._bus = bus
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        """Hand bytes to the bus."""
        self._bus._received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        """The port closed (by us, or because it failed)."""
        if not self.lost.done():
            self.lost.set_result(None)
        self._bus._lost(self, exc)


class SerialBus:
    """One serial port: at most one request outstanding, FIFO across its locks, self-reopening."""

    def __init__(self, port: str, baudrate: int = 115200) -> None:
        self.port = port
        self.baudrate = baudrate
        self._transport: asyncio.Transport | None = None
        self._proto: _Protocol | None = None
        self._decoder = FrameDecoder()
        # asyncio.Lock wakes waiters in arrival order: fair (FIFO) across the bus's locks
        self._turn = asyncio.Lock()
        self._waiter: tuple[int, int, asyncio.Future[Frame]] | None = None  # addr, seq, result
        self._links = 0
        self._opening: asyncio.Task[None] | None = None
        self.opens = 0  # times the port was (re)opened

    def __repr__(self) -> str:
        return f"SerialBus({self.port!r}, open={self.is_open}, links={self._links})"

    @property
    def is_open(self) -> bool:
        """True while the port is open."""
        return self._transport is not None

    @property
    def dropped(self) -> int:
        """Received frames dropped as malformed."""
        return self._decoder.dropped

    def link(self, addr: int) -> FrameLink:
        """A FrameLink to the lock at `addr` on this bus."""
        self._links += 1
        return SerialLink(self, addr)

    async def _open(self) -> None:
        """Open the port (8N1, exclusive); raise LockOfflineError if it cannot be opened."""
        loop = asyncio.get_running_loop()
        try:
            transport, proto = await serial_asyncio_fast.create_serial_connection(
                loop,
                lambda: _Protocol(self),
                self.port,
                baudrate=self.baudrate,
                bytesize=pyserial.EIGHTBITS,
                parity=pyserial.PARITY_NONE,
                stopbits=pyserial.STOPBITS_ONE,
                exclusive=True,
            )
        except (pyserial.SerialException, OSError, ValueError) as exc:
            raise LockOfflineError(f"serial port {self.port} cannot be opened: {exc}") from None
        self._decoder.reset()
        self._transport = transport
        assert isinstance(proto, _Protocol)
        self._proto = proto
        self.opens += 1
        _BUSES.add(self)
        log.info("serial port %s opened (%d baud)", self.port, self.baudrate)

    def _received(self, proto: _Protocol, data: bytes) -> None:
        if proto is not self._proto:
            return
        for frame in self._decoder.feed(data):
            w = self._waiter
            if w is None or w[2].done():
                continue  # late answer to an abandoned try
            addr, seq, fut = w
            if frame.is_response and frame.addr == addr and frame.seq == seq:
                fut.set_result(frame)

    def _lost(self, proto: _Protocol, exc: Exception | None) -> None:
        if proto is not self._proto:
            return
        self._transport = None
        self._proto = None
        if exc is not None:
            log.warning("serial port %s lost: %s", self.port, exc)
        w = self._waiter
        if w is not None and not w[2].done():
            w[2].set_exception(LockOfflineError(f"serial port {self.port} lost"))

    async def exchange(self, frame: Frame, *, timeout: float) -> Frame:  # noqa: ASYNC109
        """Send `frame` when the bus is free; await its answer up to `timeout` after sending."""
        wire = encode(frame)
        async with self._turn:
            if self._transport is None:
                if self._opening is None or self._opening.done():
                    self._opening = asyncio.create_task(self._open())
                # shielded: a cancelled caller must not leak a port opened in the executor
                await asyncio.shield(self._opening)
            transport = self._transport
            assert transport is not None
            fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
            self._waiter = (frame.addr, frame.seq, fut)
            # bytes before our request cannot be part of its answer (noise, late answers)
            self._decoder.reset()
            try:
                transport.write(wire)
                # the deadline counts from the end of our own transmission
                tx_time = len(wire) * BITS_PER_BYTE / self.baudrate
                async with asyncio.timeout(timeout + tx_time):
                    return await fut
            except TimeoutError:
                # a stat of a device node is cheap; catches an unplug that raised no I/O error
                if not os.path.exists(self.port):  # noqa: ASYNC240
                    await self._close()
                raise LockOfflineError(f"addr {frame.addr}: no answer in {timeout}s") from None
            except (pyserial.SerialException, OSError) as exc:
                await self._close()
                raise LockOfflineError(f"serial port {self.port} failed: {exc}") from None
            finally:
                self._waiter = None
                if not fut.done():
                    fut.cancel()
                elif not fut.cancelled():
                    fut.exception()  # mark retrieved

    async def _close(self) -> None:
        transport, proto = self._transport, self._proto
        self._transport = None
        self._proto = None
        if transport is None or proto is None:
            return
        transport.close()
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await proto.lost
        except TimeoutError:
            log.warning("serial port %s: close did not finish", self.port)

    async def _release(self) -> None:
        """One link closed; close the port when it was the last."""
        self._links -= 1
        if self._links <= 0:
            await self.close()

    async def close(self) -> None:
        """Close the port now (a later request reopens it)."""
        async with self._turn:
            await self._close()
        _BUSES.discard(self)


class SerialLink(FrameLink):
    """FrameLink to one bus address."""

    transport = "serial"

    def __init__(self, bus: SerialBus, addr: int) -> None:
        self.bus = bus
        self.addr = addr
        self._closed = False

    async def exchange(self, frame: Frame, *, timeout: float) -> Frame:  # noqa: ASYNC109
        """One try of `frame` on the bus (see FrameLink)."""
        if self._closed:
            raise LockOfflineError("link closed")
        try:
            return await self.bus.exchange(frame, timeout=timeout)
        except FrameError as exc:  # a driver bug, not a lock problem
            raise LockFaultError(f"frame not encodable: {exc}") from None

    async def close(self) -> None:
        """Detach from the bus (closing the port after the last link)."""
        if not self._closed:
            self._closed = True
            await self.bus._release()


def make_serial_drivers(locks: list[LockConfig], serial: SerialSection) -> dict[str, LockDriver]:
    """One LockLinkDriver per lock with driver 'serial', sharing one SerialBus per port."""
    buses: dict[str, SerialBus] = {}
    drivers: dict[str, LockDriver] = {}
    addrs: dict[str, set[int]] = {}
    for lock in locks:
        if lock.driver != "serial":
            continue
        port = lock.port
        addr = lock.address
        if port is None or not isinstance(addr, int):
            raise ConfigError(f"locks[{lock.id}]: serial lock needs 'port' and integer 'address'")
        bus = buses.get(port)
        if bus is None:
            bus = buses[port] = SerialBus(port, lock.baudrate)
            addrs[port] = set()
        elif bus.baudrate != lock.baudrate:
            raise ConfigError(f"locks[{lock.id}].baudrate: differs from other locks on {port}")
        if addr in addrs[port] or (addr == 0 and addrs[port]) or 0 in addrs[port]:
            raise ConfigError(f"locks[{lock.id}].address: {addr} clashes on {port}")
        addrs[port].add(addr)
        drivers[lock.id] = LockLinkDriver(
            lock.id,
            bus.link(addr),
            lock.lock_key(),
            addr=addr,
            timeout=serial.response_timeout_s,
            tries=serial.tries,
        )
    return drivers


async def close_buses() -> None:
    """Close every open serial bus (drivers closing their links do this too)."""
    for bus in list(_BUSES):
        await bus.close()
