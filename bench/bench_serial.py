"""Benchmark: confirmed credential writes/s over one emulated 115200-baud serial bus (pty).

Each write is SET_CREDENTIAL followed by GET_CREDENTIAL to confirm it. The simulated lock
(drivers.sim.pty_bus.PtyBus with baud timing) delays every byte by 10/115200 s in each
direction, so the figure includes wire time; the wire limit is computed from the bytes the
same run actually moved. Usage: .venv/bin/python bench/bench_serial.py [seconds]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from drivers.base import CredentialType, SlotWrite
from drivers.locklink.driver import LockLinkDriver
from drivers.locklink.serial import SerialBus
from drivers.sim.lockside import LockEndpoint, SimBus
from drivers.sim.model import SimulatedLock
from drivers.sim.pty_bus import BITS_PER_BYTE, PtyBus

BAUD = 115200
KEY = bytes(range(16))
SLOTS = 256


async def run(seconds: float) -> None:
    """Write and confirm PINs for `seconds`; print throughput and wire efficiency."""
    lock = SimulatedLock(slots=SLOTS, pin_min=4, pin_max=8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ttyBENCH"
        async with PtyBus(SimBus([LockEndpoint(lock, KEY, addr=1)]), baud_timing=BAUD, link=path) as pb:
            bus = SerialBus(str(path), BAUD)
            drv = LockLinkDriver("bench", bus.link(1), KEY, addr=1, timeout=0.5, tries=3)
            await drv.get_info()  # open the port and establish the session outside the timing
            in0, out0 = pb.bytes_in, pb.bytes_out
            n = 0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                w = SlotWrite(
                    n % SLOTS,
                    CredentialType.PIN,
                    n.to_bytes(16, "big"),
                    0,
                    2**32 - 1,
                    f"{10_000_000 + n:08d}".encode(),
                )
                await drv.set_credential(w)
                if not (await drv.get_credential(w.slot)).matches(w):
                    raise SystemExit(f"write {n} not confirmed")
                n += 1
            elapsed = time.perf_counter() - t0
            to_lock, from_lock = pb.bytes_in - in0, pb.bytes_out - out0
            await drv.close()
    per_write = (to_lock + from_lock) / n  # half-duplex: both directions share the line
    wire_limit = BAUD / BITS_PER_BYTE / per_write
    rate = n / elapsed
    print(f"confirmed writes: {n} in {elapsed:.2f} s")
    print(f"bytes per confirmed write: {to_lock / n:.0f} to lock + {from_lock / n:.0f} from lock")
    print(f"throughput: {rate:.1f} writes/s")
    print(f"wire limit at {BAUD} baud 8N1: {wire_limit:.1f} writes/s")
    print(f"fraction of wire limit: {rate / wire_limit:.1%}")


if __name__ == "__main__":
    asyncio.run(run(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0))
