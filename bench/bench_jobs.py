"""Benchmark: jobs/s from the portal's publish to the gateway's durable `accepted` ack, vs a bare echo.

The portal publishes N key.upsert jobs (QoS 1, all at once) to {root}/jobs and waits until all N
acks arrived on {gw}/acks. The gateway (`python -m gateway run`, memory locks at zero latency,
its own process) acks each job only after the job, its door statuses and the ack are committed to
SQLite (WAL, synchronous=FULL). Baseline, in the same run on the same broker: a bare aiomqtt
client in its own process that republishes every message it receives on one topic to another
(QoS 1 both ways, pipelined); the portal publishes N messages of the same size and waits for
all N echoes. Each figure is the median of the repetitions; the ratio is gateway / echo.

Two gateway variants:
  ingest      keys with allow_provisioning false: job -> ack + pending_provisioning status
  +provision  keys with allow_provisioning true: the lock workers write and read back each
              credential in the same daemon while jobs keep arriving; also timed until every
              key's retained status shows `provisioned`.

Usage: .venv/bin/python bench/bench_jobs.py [--jobs N] [--reps R] [--locks L]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from common import (
    GW_TOPICS,
    ROOT,
    GatewayWatch,
    Portal,
    broker,
    daemon,
    echo_process,
    job,
    key_body,
    median,
    memory_locks,
    workdir,
    write_config,
)

ECHO_IN = "bench/echo/in"
ECHO_OUT = "bench/echo/out"
_codes = iter(range(10_000_000, 99_999_999))  # door codes unique per lock across all runs


def make_jobs(tag: str, n: int, locks: int, allow: bool) -> tuple[list[str], list[str], list[bytes]]:
    """(job ids, key ids, payloads) of n key.upsert jobs, keys spread round-robin over the doors."""
    ids, keys, payloads = [], [], []
    for i in range(n):
        key_id = f"k-{tag}-{i}"
        env = job("key.upsert", key_body(key_id, 1, [f"d{i % locks:05d}"], code=str(next(_codes)),
                                         allow=allow))
        ids.append(env["job_id"])
        keys.append(key_id)
        payloads.append(json.dumps(env).encode())
    return ids, keys, payloads


async def run_gateway(p: Portal, w: GatewayWatch, tag: str, n: int, locks: int,
                      allow: bool) -> tuple[float, float | None]:
    """Publish n jobs; (seconds until all acked, seconds until all provisioned or None)."""
    ids, keys, payloads = make_jobs(tag, n, locks, allow)
    want = "provisioned" if allow else "pending_provisioning"
    w.expect(ids, dict.fromkeys(keys, want))
    t0 = time.perf_counter()
    await p.publish_all(f"{ROOT}/jobs", payloads)
    await p.wait_for(lambda: not w.waiting_acks, 120, f"{n} acks")
    t_ack = time.perf_counter() - t0
    bad = [w.acks[i] for i in ids if w.acks[i] != "accepted"]
    if bad:
        raise SystemExit(f"{len(bad)} jobs not accepted: {bad[:3]}")
    await p.wait_for(lambda: not w.waiting_keys, 300, f"{n} keys {want}")
    t_done = time.perf_counter() - t0
    return t_ack, (t_done if allow else None)


async def run_echo(p: Portal, counter: list[int], n: int, size: int) -> float:
    """Publish n messages of `size` bytes through the echo client; seconds until all came back."""
    counter[0] = 0
    payloads = [(b"%08d" % i).ljust(size, b"x") for i in range(n)]
    t0 = time.perf_counter()
    await p.publish_all(ECHO_IN, payloads)
    await p.wait_for(lambda: counter[0] >= n, 120, f"{n} echoes")
    return time.perf_counter() - t0


async def main(args: argparse.Namespace) -> None:
    """Start broker, gateway and echo client; alternate echo and gateway runs; print medians."""
    from common import portal

    started = time.perf_counter()
    n, locks = args.jobs, args.locks
    with workdir() as base, broker(base) as b:
        slots = max(64, (args.reps + 1) * n // locks * 2)
        cfg = write_config(base, b.port, memory_locks(locks, slots=slots))
        with daemon(cfg, base / "gateway.log") as d, echo_process(b.port, ECHO_IN, ECHO_OUT):
            async with portal(b.port, [*GW_TOPICS, ECHO_OUT]) as p:
                w = GatewayWatch(p)
                counter = [0]

                def count(topic: str, _payload: bytes) -> None:
                    if topic == ECHO_OUT:
                        counter[0] += 1

                p.handlers.append(count)
                await p.wait_for(lambda: w.online and len(w.locks) >= locks, 60, "gateway online")
                size = len(make_jobs("size", 1, locks, True)[2][0])
                # Warm-up (imports, SQLite pages, paho buffers), not counted.
                await run_gateway(p, w, "warm", min(n, 100), locks, True)
                await run_echo(p, counter, min(n, 100), size)
                echo, ingest, prov_ack, prov_done, cpu_ingest = [], [], [], [], []
                for rep in range(args.reps):
                    echo.append(n / await run_echo(p, counter, n, size))
                    cpu0 = d.cpu_s()
                    t_ack, _ = await run_gateway(p, w, f"i{rep}", n, locks, False)
                    cpu_ingest.append((d.cpu_s() - cpu0) / n * 1000)
                    ingest.append(n / t_ack)
                    t_ack, t_done = await run_gateway(p, w, f"p{rep}", n, locks, True)
                    assert t_done is not None
                    prov_ack.append(n / t_ack)
                    prov_done.append(n / t_done)
                    d.check_alive()
    e, gi, gp, gd = median(echo), median(ingest), median(prov_ack), median(prov_done)
    print(f"bench_jobs: {n} jobs x {args.reps} reps, {locks} memory locks, payload {size} B, "
          f"medians (each rep: echo, ingest, +provision)")
    print(f"  bare echo client       : {e:8.0f} msg/s   reps {[round(x) for x in echo]}")
    print(f"  gateway ingest         : {gi:8.0f} jobs/s  reps {[round(x) for x in ingest]}"
          f"  ratio gateway/echo {gi / e:.3f}")
    print(f"  gateway +provision ack : {gp:8.0f} jobs/s  reps {[round(x) for x in prov_ack]}"
          f"  ratio gateway/echo {gp / e:.3f}")
    print(f"  ... until provisioned  : {gd:8.0f} keys/s  reps {[round(x) for x in prov_done]}")
    print(f"  gateway CPU per ingested job: {median(cpu_ingest):.2f} ms")
    print(f"  wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1000, help="jobs per repetition (default 1000)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    ap.add_argument("--locks", type=int, default=20, help="memory locks (default 20)")
    asyncio.run(main(ap.parse_args()))
