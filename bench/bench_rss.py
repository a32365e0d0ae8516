"""Benchmark: resident memory of the daemon holding 50,000 provisioned keys over 2,000 doors.

One daemon process (`python -m gateway run`, 2,000 memory locks at zero latency, 256 slots each):
  1. idle: online, every lock worker has published its health, no keys -> VmRSS (the baseline);
  2. the portal feeds key.upsert jobs (each key on 1-3 random doors, allow_provisioning true),
     in windows, waiting for each window's acks; then waits until every key's retained status
     shows `provisioned` on all its doors -> VmRSS and VmHWM (peak) of the same process.
Printed: both RSS figures, the difference per key and per provisioned door, and the time it took.

The memory driver keeps each simulated lock's slot contents in the daemon's own heap, which a
real serial/BLE deployment does not; the bench estimates that share (same operations on the same
driver in the bench process, measured with tracemalloc) and prints the per-key figure without it.

Usage: .venv/bin/python bench/bench_rss.py [--keys 50000] [--doors 2000] [--window 500]
The default takes several minutes on a 2-core machine; --keys 5000 --doors 200 is a quick check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import tracemalloc

from common import (
    GW_TOPICS,
    ROOT,
    GatewayWatch,
    broker,
    daemon,
    job,
    key_body,
    memory_locks,
    workdir,
    write_config,
)

SLOTS = 256


def plan(keys: int, doors: int, seed: int = 1) -> list[list[str]]:
    """Doors of each key: 1, 2 or 3 distinct random doors."""
    rnd = random.Random(seed)
    return [[f"d{j:05d}" for j in rnd.sample(range(doors), 1 + i % 3)] for i in range(keys)]


async def sim_share(doors_per_lock: int, locks: int) -> int:
    """Bytes the memory driver's simulated locks hold for `doors_per_lock` credentials on `locks` locks."""
    from drivers.base import CredentialType, SlotWrite
    from drivers.memory import MemoryDriver
    from drivers.sim.model import SimulatedLock

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    drv = MemoryDriver("est", SimulatedLock(serial="EST", slots=SLOTS))
    for i in range(doors_per_lock):
        w = SlotWrite(i, CredentialType.PIN, i.to_bytes(16, "big"), 0, 2**32 - 1,
                      str(10_000_000 + i).encode())
        await drv.set_credential(w)
        await drv.get_credential(i)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used * locks


async def main(args: argparse.Namespace) -> None:
    """Idle RSS, feed the keys, loaded RSS; print."""
    from common import portal

    started = time.perf_counter()
    doors_of = plan(args.keys, args.doors)
    with workdir() as base, broker(base) as b:
        cfg = write_config(base, b.port, memory_locks(args.doors, slots=SLOTS))
        with daemon(cfg, base / "gateway.log") as d:
            async with portal(b.port, GW_TOPICS) as p:
                w = GatewayWatch(p)
                await p.wait_for(lambda: w.online and len(w.locks) >= args.doors, 300, "gateway online")
                await asyncio.sleep(3)  # let the start-up outbox drain and the heap settle
                t_idle = time.perf_counter() - started
                idle_rss = d.status("VmRSS")
                print(f"idle: {args.doors} locks online after {t_idle:.1f} s, "
                      f"VmRSS {idle_rss / 1024:.1f} MiB", flush=True)

                t0 = time.perf_counter()
                codes = iter(range(10_000_000, 99_999_999))
                for start in range(0, args.keys, args.window):
                    ids, want = [], {}
                    payloads = []
                    for i in range(start, min(args.keys, start + args.window)):
                        key_id = f"k-{i:06d}"
                        env = job("key.upsert", key_body(key_id, 1, doors_of[i], code=str(next(codes))))
                        ids.append(env["job_id"])
                        want[key_id] = "provisioned"
                        payloads.append(json.dumps(env).encode())
                    w.expect(ids)
                    await p.publish_all(f"{ROOT}/jobs", payloads)
                    await p.wait_for(lambda: not w.waiting_acks, 300, "acks")
                    d.check_alive()
                    if (start // args.window) % 20 == 19:
                        done = time.perf_counter() - t0
                        print(f"  {start + len(ids)} keys acked, {done:.0f} s", flush=True)
                t_acked = time.perf_counter() - t0
                bad = sum(1 for r in w.acks.values() if r != "accepted")
                if bad:
                    raise SystemExit(f"{bad} jobs not accepted")
                w.expect([], {f"k-{i:06d}": "provisioned" for i in range(args.keys)})
                await p.wait_for(lambda: not w.waiting_keys, 3600, "every key provisioned")
                t_prov = time.perf_counter() - t0
                await asyncio.sleep(3)  # the last statuses leave the outbox
                rss, hwm = d.status("VmRSS"), d.status("VmHWM")
                cpu = d.cpu_s()
    doors = sum(len(x) for x in doors_of)
    per_lock = doors / args.doors
    sim = await sim_share(round(per_lock), args.doors)
    grown = (rss - idle_rss) * 1024
    print(f"bench_rss: {args.keys} keys over {args.doors} doors ({doors} provisioned doors, "
          f"{per_lock:.0f} per lock), memory locks")
    print(f"  idle daemon, same config, no keys : VmRSS {idle_rss / 1024:8.1f} MiB")
    print(f"  with every key provisioned        : VmRSS {rss / 1024:8.1f} MiB   (peak VmHWM "
          f"{hwm / 1024:.1f} MiB)")
    print(f"  growth: {grown / 2**20:.1f} MiB = {grown / args.keys:.0f} B per key, "
          f"{grown / doors:.0f} B per provisioned door")
    print(f"  of which simulated lock contents (memory driver only, estimated): {sim / 2**20:.1f} MiB"
          f" -> {(grown - sim) / args.keys:.0f} B per key without it")
    print(f"  time: all acks after {t_acked:.1f} s ({args.keys / t_acked:.0f} jobs/s), all provisioned "
          f"after {t_prov:.1f} s ({doors / t_prov:.0f} door writes/s); daemon CPU {cpu:.0f} s; "
          f"wall {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=50_000)
    ap.add_argument("--doors", type=int, default=2_000)
    ap.add_argument("--window", type=int, default=500, help="jobs published before waiting for their acks")
    asyncio.run(main(ap.parse_args()))
