"""Tests for the pty-served simulator bus (drivers.sim.pty_bus) through a real pty and pyserial."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import serial

from drivers.locklink import messages as m
from drivers.locklink.frame import Frame, FrameDecoder, encode
from drivers.locklink.messages import Op
from drivers.locklink.session import lock_proof
from drivers.sim.lockside import LockEndpoint, SimBus
from drivers.sim.model import SimulatedLock
from drivers.sim.pty_bus import PtyBus

KEY = bytes(range(16))


def _exchange(port: serial.Serial, wire: bytes) -> Frame:
    """Write one request and read frames until a response arrives (blocking, in a thread)."""
    port.write(wire)
    dec = FrameDecoder()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        frames = dec.feed(port.read_until(b"\0"))
        if frames:
            return frames[0]
    raise AssertionError("no answer")


async def test_hello_over_pty() -> None:
    ep = LockEndpoint(SimulatedLock(), KEY)
    async with PtyBus(SimBus([ep])) as pb:
        assert pb.path.startswith("/dev/")
        ng = os.urandom(16)
        port = serial.Serial(pb.path, 115200, timeout=1)
        try:
            wire = encode(Frame(0, 0, 42, Op.HELLO, 0, m.encode_hello_req(ng)))
            resp = await asyncio.to_thread(_exchange, port, wire)
        finally:
            port.close()
    assert resp.seq == 42 and resp.is_response
    hr = m.decode_hello_resp(resp.body)
    assert hr.proof == lock_proof(KEY, ng, hr.nl)
    assert ep.has_session
    assert not pb.running


async def test_multidrop_and_reopen(tmp_path: Path) -> None:
    eps = [LockEndpoint(SimulatedLock(serial=f"L{a}"), KEY, addr=a) for a in (1, 2)]
    link = tmp_path / "ttyLOCK"
    async with PtyBus(SimBus(eps), link=link) as pb:
        assert link.is_symlink() and os.readlink(link) == pb.path
        for addr in (2, 1):
            port = serial.Serial(str(link), 115200, timeout=1)  # open via the symlink each time
            try:
                wire = encode(Frame(addr, 0, addr, Op.GET_INFO, 0, b""))
                resp = await asyncio.to_thread(_exchange, port, wire)
            finally:
                port.close()
            assert resp.addr == addr
            assert m.decode_status_resp(resp.body) == 6  # AUTH_REQUIRED: no session yet
    assert not link.exists()


async def test_baud_timing_and_latency() -> None:
    lock = SimulatedLock()
    lock.faults.latency_s = 0.2
    async with PtyBus(SimBus([LockEndpoint(lock, KEY)]), baud_timing=9600) as pb:
        port = serial.Serial(pb.path, 9600, timeout=2)
        try:
            wire = encode(Frame(0, 0, 1, Op.HELLO, 0, bytes(16)))
            t0 = time.monotonic()
            resp = await asyncio.to_thread(_exchange, port, wire)
            elapsed = time.monotonic() - t0
        finally:
            port.close()
    # 0.2 s latency + (~30 + ~48 bytes) * 10 / 9600 s of wire time
    assert resp.op == Op.HELLO
    assert 0.25 < elapsed < 1.5


async def test_stop_is_idempotent() -> None:
    pb = PtyBus(SimBus([LockEndpoint(SimulatedLock(), KEY)]))
    await pb.start()
    await pb.start()
    await pb.stop()
    await pb.stop()
