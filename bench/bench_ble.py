"""Benchmark: BLE exchanges/s for N locks sharing an adapter's connection slots (simulated BlueZ).

Every lock answers each request after a simulated per-operation latency L; connecting costs
a simulated link set-up plus GATT discovery. With S slots the best possible rate is S / L
operations per second; the figure printed is achieved / (S / L), per slot-sharing policy.
Everything runs through bleak's real BlueZ backend on a private dbus-daemon.
Usage: .venv/bin/python bench/bench_ble.py [--locks 6] [--latency 0.05] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from dataclasses import dataclass

from drivers.base import LockOfflineError
from drivers.locklink.ble import BleLink, SlotPool
from drivers.locklink.frame import Frame
from drivers.sim.bluez import EchoResponder, SimBlueZ
from drivers.sim.bluez_bus import private_system_bus


@dataclass
class Result:
    """One scenario's outcome."""

    ops: int
    failures: int
    elapsed: float
    per_lock: list[int]
    connects: int
    peak: int


async def scenario(
    sim: SimBlueZ,
    macs: list[str],
    *,
    slots: int,
    min_hold_s: float | None,
    seconds: float,
) -> Result:
    """Each lock's worker runs back-to-back exchanges for `seconds`."""
    pool = SlotPool("hci0", slots, min_hold_s=min_hold_s)
    links = [BleLink(m, adapter="hci0", pool=pool, name=m[-5:], scan_timeout=2.0) for m in macs]
    counts = [0] * len(links)
    failures = 0
    deadline = time.perf_counter() + seconds  # operations completed by then are counted

    async def worker(i: int, link: BleLink) -> None:
        nonlocal failures
        seq = 0
        while time.perf_counter() < deadline:
            seq = (seq + 1) & 0xFFFF
            try:
                await link.exchange(Frame(0, 0, seq, 0x02, 0, b"x" * 24), timeout=2.0)
                if time.perf_counter() <= deadline:  # count the window only, not the tail
                    counts[i] += 1
            except LockOfflineError:
                failures += 1

    await asyncio.gather(*(worker(i, lk) for i, lk in enumerate(links)))
    elapsed = seconds
    connects = sum(lk.stats.connects for lk in links)
    for lk in links:
        await lk.close()
    return Result(sum(counts), failures, elapsed, counts, connects, pool.peak)


async def main(args: argparse.Namespace) -> None:
    """Run the scenarios and print a table."""
    logging.basicConfig(level=logging.ERROR)
    ideal = args.slots / args.latency
    print(
        f"BLE slot sharing: S={args.slots} slots, L={args.latency * 1000:.0f} ms per operation, "
        f"connect {args.connect_delay * 1000:.0f} ms + discovery {args.discovery_delay * 1000:.0f} ms"
    )
    print(f"ideal S/L = {ideal:.1f} ops/s\n")
    print(f"{'locks':>5} {'policy':<18} {'ops/s':>7} {'ratio':>6} {'fail':>5} {'conn':>5} per-lock ops")
    async with private_system_bus() as address:
        sim = SimBlueZ()
        sim.add_adapter("hci0", max_connections=args.slots)
        await sim.start(address)
        macs = [f"AA:BB:CC:00:00:{i:02X}" for i in range(1, args.locks + 1)]
        for i, m in enumerate(macs, 1):
            p = sim.add_peripheral("hci0", m, f"LL-{i:04d}", EchoResponder(args.latency))
            p.connect_delay = args.connect_delay
            p.discovery_delay = args.discovery_delay
        runs: list[tuple[int, str, float | None]] = [
            (min(args.slots, args.locks), "no contention", 1.0),
            (args.locks, "min_hold 1.0 s", 1.0),
            (args.locks, "min_hold 0.25 s", 0.25),
            (args.locks, "no eviction", None),
        ]
        for n, label, hold in runs:
            r = await scenario(
                sim, macs[:n], slots=args.slots, min_hold_s=hold, seconds=args.seconds
            )
            rate = r.ops / r.elapsed
            print(
                f"{n:>5} {label:<18} {rate:>7.1f} {rate / ideal:>6.2f} {r.failures:>5} "
                f"{r.connects:>5} {r.per_lock}"
            )
            assert r.peak <= args.slots
        await sim.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--locks", type=int, default=6)
    ap.add_argument("--slots", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds per operation")
    ap.add_argument("--connect-delay", type=float, default=0.1)
    ap.add_argument("--discovery-delay", type=float, default=0.05)
    ap.add_argument("--seconds", type=float, default=5.0, help="per scenario")
    asyncio.run(main(ap.parse_args()))
