"""Benchmark: latency from a reservation's check-in to its key showing `provisioned` on the door.

Setup (not timed): the daemon (`python -m gateway run`, memory locks at zero latency, its own
process) receives policy.update with require_checkin_before_provisioning, K reservations
`booked` and K keys each linked to one reservation; the bench waits until every key's retained
status shows `pending_provisioning`. Then, one reservation at a time, the portal publishes
reservation.upsert `checked_in` and measures until that key's retained status shows
`provisioned` (the daemon stored the job, decided, wrote the PIN, read it back, confirmed it and
published the status). Baseline, interleaved with the samples in the same run: the broker
round trip, publish (QoS 1) -> receive on the same client (subscribed QoS 1).

Usage: .venv/bin/python bench/bench_checkin.py [--keys K] [--locks L]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from common import (
    GW_TOPICS,
    ROOT,
    GatewayWatch,
    broker,
    daemon,
    job,
    key_body,
    median,
    memory_locks,
    pct,
    workdir,
    write_config,
)

RTT_TOPIC = "bench/rtt"


async def main(args: argparse.Namespace) -> None:
    """Set up K pending keys, then time K check-ins and K broker round trips."""
    from common import portal

    started = time.perf_counter()
    k, locks = args.keys, args.locks
    with workdir() as base, broker(base) as b:
        cfg = write_config(base, b.port, memory_locks(locks, slots=max(32, 2 * k // locks + 8)))
        with daemon(cfg, base / "gateway.log") as d:
            async with portal(b.port, [*GW_TOPICS, RTT_TOPIC]) as p:
                w = GatewayWatch(p)
                loop = asyncio.get_running_loop()
                waiting: dict[str, asyncio.Future[float]] = {}

                def on_key(key_id: str, st: dict[str, Any]) -> None:
                    fut = waiting.get(key_id)
                    if fut is not None and not fut.done() and all(
                        door["state"] == "provisioned" for door in st["doors"].values()
                    ):
                        fut.set_result(time.perf_counter())

                def on_rtt(topic: str, _payload: bytes) -> None:
                    fut = waiting.get(RTT_TOPIC)
                    if topic == RTT_TOPIC and fut is not None and not fut.done():
                        fut.set_result(time.perf_counter())

                w.on_key = on_key
                p.handlers.append(on_rtt)
                await p.wait_for(lambda: w.online and len(w.locks) >= locks, 60, "gateway online")

                jobs = [job("policy.update", {"version": 1, "require_checkin_before_provisioning": True,
                                              "revoke_on_checkout": True})]
                for i in range(k):
                    jobs.append(job("reservation.upsert", {"reservation_id": f"R-{i}", "version": 1,
                                                           "status": "booked"}))
                    jobs.append(job("key.upsert", key_body(
                        f"k-{i}", 1, [f"d{i % locks:05d}"], code=str(10_000_000 + i),
                        reservation=f"R-{i}")))
                w.expect([j["job_id"] for j in jobs],
                         {f"k-{i}": "pending_provisioning" for i in range(k)})
                for j in jobs:  # in order: the policy must be in place before the keys
                    await p.publish(f"{ROOT}/jobs", j)
                await p.wait_for(lambda: not w.waiting_acks and not w.waiting_keys, 120,
                                 f"{k} keys pending")
                await asyncio.sleep(1)  # start-up and setup traffic has left the outbox

                checkin, rtt = [], []
                for i in range(k):
                    fut = waiting[RTT_TOPIC] = loop.create_future()
                    t0 = time.perf_counter()
                    await p.publish(RTT_TOPIC, b"%d" % i)
                    rtt.append((await asyncio.wait_for(fut, 10) - t0) * 1000)

                    fut = waiting[f"k-{i}"] = loop.create_future()
                    body = {"reservation_id": f"R-{i}", "version": 2, "status": "checked_in",
                            "channel": "front_desk"}
                    t0 = time.perf_counter()
                    await p.publish(f"{ROOT}/jobs", job("reservation.upsert", body))
                    checkin.append((await asyncio.wait_for(fut, 30) - t0) * 1000)
                d.check_alive()
    print(f"bench_checkin: {k} check-ins, one at a time, {locks} memory locks (zero latency)")
    print(f"  check-in -> provisioned : p50 {median(checkin):6.2f} ms   p99 {pct(checkin, 99):6.2f} ms"
          f"   max {max(checkin):6.2f} ms")
    print(f"  broker round trip       : p50 {median(rtt):6.2f} ms   p99 {pct(rtt, 99):6.2f} ms"
          f"   max {max(rtt):6.2f} ms")
    print(f"  ratio p50 check-in / round trip: {median(checkin) / median(rtt):.1f}")
    print(f"  wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=300, help="reservations/keys checked in (default 300)")
    ap.add_argument("--locks", type=int, default=20, help="memory locks (default 20)")
    asyncio.run(main(ap.parse_args()))
