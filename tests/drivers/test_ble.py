"""BleLink through bleak's real BlueZ backend against the simulated BlueZ (no radio, no mocks)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from bleak import BleakScanner

from drivers.base import CredentialType, LockOfflineError, SlotWrite
from drivers.locklink.ble import SERVICE_UUID, BleLink, SlotPool, make_ble_drivers
from drivers.locklink.frame import FLAG_RESP, Frame, FrameDecoder, encode
from drivers.sim.bluez import EchoResponder, SimBlueZ, SimPeripheral
from drivers.sim.lockside import LockEndpoint, SimBus
from drivers.sim.model import SimulatedLock
from gateway.config import BleSection, ConfigError, LockConfig

MAC = "AA:BB:CC:DD:EE:01"
KEY_HEX = "00112233445566778899aabbccddeeff"


def mac(i: int) -> str:
    """The i-th test MAC."""
    return f"AA:BB:CC:DD:EE:{i:02X}"


def req(seq: int, body: bytes = b"ping") -> Frame:
    """A request frame (plaintext op 0x02)."""
    return Frame(addr=0, flags=0, seq=seq, op=0x02, ctr=0, body=body)


def add_lock(sim: SimBlueZ, i: int = 1, *, latency: float = 0.0, mtu: int = 23) -> SimPeripheral:
    """An advertising echo lock LL-000i on hci0."""
    return sim.add_peripheral("hci0", mac(i), f"LL-{i:04d}", EchoResponder(latency), mtu=mtu)


def link_for(i: int = 1, pool: SlotPool | None = None, **kw: float) -> BleLink:
    """A BleLink to lock i with short test timeouts."""
    opts: dict[str, float] = {"scan_timeout": 1.0, "connect_timeout": 3.0, "idle_disconnect_s": 30.0}
    opts.update(kw)
    return BleLink(mac(i), adapter="hci0", pool=pool, name=f"lock{i}", **opts)  # type: ignore[arg-type]


class ChoppyResponder:
    """Answers like EchoResponder but cuts the answer into odd pieces, after some line noise."""

    def __init__(self, cuts: tuple[int, ...] = (1, 7, 3, 30, 2)) -> None:
        self.cuts = cuts
        self._decoder = FrameDecoder()

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        """Noise + a stray frame for another seq + the real answer in pieces."""
        out: list[tuple[float, bytes]] = []
        for frame in self._decoder.feed(data):
            wire = encode(replace(frame, flags=FLAG_RESP))
            stray = encode(replace(frame, flags=FLAG_RESP, seq=(frame.seq + 1) & 0xFFFF))
            out.append((0.0, b"\x55\x66\x77\x00" + stray[:5]))  # garbage, then half a frame
            out.append((0.0, b"\x00"))  # ... cut off by a delimiter
            out.append((0.0, stray))
            pos = 0
            for n in self.cuts:
                out.append((0.001, wire[pos : pos + n]))
                pos += n
            out.append((0.001, wire[pos:]))
        return [(d, b) for d, b in out if b]


async def test_scan_finds_lock(sim_bluez: SimBlueZ) -> None:
    add_lock(sim_bluez, 1)
    add_lock(sim_bluez, 2)
    found = await BleakScanner.discover(timeout=0.3, service_uuids=[SERVICE_UUID], return_adv=True)
    by_addr = {d.address: (d, adv) for d, adv in found.values()}
    assert set(by_addr) == {mac(1), mac(2)}
    dev, adv = by_addr[mac(1)]
    assert adv.local_name == "LL-0001"
    assert SERVICE_UUID in adv.service_uuids
    assert dev.details["path"] == "/org/bluez/hci0/dev_AA_BB_CC_DD_EE_01"


async def test_connect_and_exchange(sim_bluez: SimBlueZ) -> None:
    p = add_lock(sim_bluez)
    link = link_for()
    t0 = time.perf_counter()
    resp = await link.exchange(req(7), timeout=2.0)
    assert resp == replace(req(7), flags=FLAG_RESP)
    assert link.connected and link.transport == "ble"
    assert time.perf_counter() - t0 < 1.0
    for seq in range(8, 20):
        assert (await link.exchange(req(seq), timeout=2.0)).seq == seq
    assert p.stats.connects == 1 and link.stats.connects == 1
    assert link.pool.in_use == 1
    await link.close()
    assert not link.connected and link.pool.in_use == 0
    assert not p.connected


async def test_writes_and_notifications_split_at_mtu_minus_3(sim_bluez: SimBlueZ) -> None:
    p = add_lock(sim_bluez, mtu=23)
    link = link_for()
    body = bytes(range(256)) * 1 + b"\x00" * 40  # zeros exercise COBS
    resp = await link.exchange(req(1, body), timeout=2.0)
    assert resp.body == body
    assert link.chunk_size == 20
    assert p.stats.max_write == 20 and p.stats.writes > 10
    assert p.stats.max_notification == 20 and p.stats.notifications > 10
    await link.close()


async def test_larger_mtu_gives_larger_chunks(sim_bluez: SimBlueZ) -> None:
    p = add_lock(sim_bluez, mtu=185)
    link = link_for()
    body = b"\x01" * 300
    assert (await link.exchange(req(1, body), timeout=2.0)).body == body
    assert link.chunk_size == 182
    assert p.stats.max_write == 182 and p.stats.max_notification == 182
    await link.close()


async def test_reassembly_of_odd_pieces_ignores_noise_and_strays(sim_bluez: SimBlueZ) -> None:
    sim_bluez.add_peripheral("hci0", MAC, "LL-0001", ChoppyResponder())
    link = link_for()
    for seq in (100, 101, 102):
        resp = await link.exchange(req(seq, b"hello" * 9), timeout=2.0)
        assert resp.seq == seq and resp.body == b"hello" * 9
    assert link.stats.stray_frames >= 3  # the answers for seq+1 were not taken as ours
    await link.close()


async def test_connect_failure_is_offline_and_recovers(sim_bluez: SimBlueZ) -> None:
    p = add_lock(sim_bluez)
    link = link_for(connect_attempts=1)
    p.fail_connect(times=1)
    with pytest.raises(LockOfflineError) as err:
        await link.exchange(req(1), timeout=2.0)
    assert "connect failed" in str(err.value) and len(str(err.value)) < 80
    assert link.pool.in_use == 0 and not link.connected
    assert (await link.exchange(req(2), timeout=2.0)).seq == 2


async def test_retry_connector_retries_a_transient_failure(sim_bluez: SimBlueZ) -> None:
    p = add_lock(sim_bluez)
    p.fail_connect(times=1)
    link = link_for(connect_attempts=2)
    assert (await link.exchange(req(1), timeout=2.0)).seq == 1
    assert p.stats.connect_attempts == 2


async def test_device_not_found(sim_bluez: SimBlueZ) -> None:
    link = link_for(9, scan_timeout=0.2, not_found_backoff_s=5.0)
    t0 = time.perf_counter()
    with pytest.raises(LockOfflineError, match="lock not found"):
        await link.exchange(req(1), timeout=2.0)
    assert time.perf_counter() - t0 < 1.5
    t1 = time.perf_counter()
    with pytest.raises(LockOfflineError, match="not found recently"):
        await link.exchange(req(2), timeout=2.0)  # fails fast, no second scan
    assert time.perf_counter() - t1 < 0.1
    assert link.pool.in_use == 0


async def test_missing_adapter_is_offline(sim_bluez: SimBlueZ) -> None:
    add_lock(sim_bluez)
    link = BleLink(MAC, adapter="hci7", scan_timeout=0.2)
    with pytest.raises(LockOfflineError, match="scan failed"):
        await link.exchange(req(1), timeout=1.0)
    assert link.pool.in_use == 0


async def test_device_disappears_then_returns(sim_bluez: SimBlueZ) -> None:
    add_lock(sim_bluez)
    link = link_for(scan_timeout=0.2, not_found_backoff_s=0.0)
    await link.exchange(req(1), timeout=2.0)
    sim_bluez.remove_peripheral(MAC)
    await asyncio.sleep(0.05)
    assert not link.connected and link.pool.in_use == 0
    with pytest.raises(LockOfflineError):
        await link.exchange(req(2), timeout=2.0)
    add_lock(sim_bluez)
    assert (await link.exchange(req(3), timeout=2.0)).seq == 3


async def test_out_of_range_known_device_fails_then_needs_a_scan(sim_bluez: SimBlueZ) -> None:
    p = add_lock(sim_bluez)
    p.page_timeout = 0.1
    link = link_for(scan_timeout=0.2, connect_attempts=1, not_found_backoff_s=0.0)
    await link.exchange(req(1), timeout=2.0)
    p.advertising = False  # BlueZ still knows the device, but it is out of range
    p.drop_link()
    with pytest.raises(LockOfflineError):
        await link.exchange(req(2), timeout=2.0)
    assert p.stats.connect_attempts == 1  # scanned first: no futile Connect


async def test_slow_connect_bounded_by_connect_timeout(sim_bluez: SimBlueZ) -> None:
    p = add_lock(sim_bluez)
    p.connect_delay = 2.0
    link = link_for(connect_timeout=0.3)
    t0 = time.perf_counter()
    with pytest.raises(LockOfflineError, match="connect failed"):
        await link.exchange(req(1), timeout=2.0)
    assert time.perf_counter() - t0 < 1.0
    assert link.pool.in_use == 0
    await asyncio.sleep(0.05)
    assert not p.connected  # the pending Connect was cancelled
    p.connect_delay = 0.05
    assert (await link.exchange(req(2), timeout=2.0)).seq == 2


async def test_link_lost_mid_write_then_reconnects(sim_bluez: SimBlueZ) -> None:
    p = add_lock(sim_bluez)
    link = link_for()
    await link.exchange(req(1), timeout=2.0)
    p.drop_on_write()
    with pytest.raises(LockOfflineError):
        await link.exchange(req(2, b"x" * 50), timeout=2.0)
    assert not link.connected and link.pool.in_use == 0
    assert (await link.exchange(req(3), timeout=2.0)).seq == 3
    assert p.stats.connects == 2 and p.stats.link_drops == 1


async def test_link_lost_mid_discovery_then_reconnects(sim_bluez: SimBlueZ) -> None:
    p = add_lock(sim_bluez)
    p.discovery_delay = 0.1
    link = link_for(connect_attempts=2)
    p.drop_on_discovery(times=2)
    with pytest.raises(LockOfflineError, match="connect failed"):
        await link.exchange(req(1), timeout=2.0)
    assert link.pool.in_use == 0
    assert (await link.exchange(req(2), timeout=2.0)).seq == 2
    assert p.stats.connects == 3


async def test_link_lost_while_waiting_for_answer(sim_bluez: SimBlueZ) -> None:
    p = add_lock(sim_bluez, latency=1.0)
    link = link_for()
    await link.exchange(req(1), timeout=2.0)
    asyncio.get_running_loop().call_later(0.1, p.drop_link)
    t0 = time.perf_counter()
    with pytest.raises(LockOfflineError, match="link lost"):
        await link.exchange(req(2), timeout=3.0)
    assert time.perf_counter() - t0 < 0.5
    assert link.pool.in_use == 0


async def test_timeout_keeps_link_and_next_exchange_works(sim_bluez: SimBlueZ) -> None:
    p = add_lock(sim_bluez, latency=0.3)
    link = link_for()
    with pytest.raises(LockOfflineError, match="no answer"):
        await link.exchange(req(1), timeout=0.1)
    assert link.connected
    await asyncio.sleep(0.3)  # the late answer for seq 1 arrives and is dropped
    assert (await link.exchange(req(2), timeout=1.0)).seq == 2
    assert link.stats.stray_frames == 1 and p.stats.connects == 1


async def test_fourth_lock_waits_for_slot_until_idle_disconnect(sim_bluez: SimBlueZ) -> None:
    for i in range(1, 5):
        add_lock(sim_bluez, i)
    pool = SlotPool("hci0", 3, min_hold_s=None)
    links = [link_for(i, pool, idle_disconnect_s=0.6) for i in range(1, 5)]
    for i, link in enumerate(links[:3]):
        await link.exchange(req(i), timeout=2.0)
    assert pool.in_use == 3
    with pytest.raises(LockOfflineError, match="no free connection slot"):
        await links[3].exchange(req(9), timeout=0.2)
    assert pool.timeouts == 1 and not links[3].connected
    t0 = time.perf_counter()
    assert (await links[3].exchange(req(10), timeout=2.0)).seq == 10
    waited = time.perf_counter() - t0
    assert 0.2 < waited < 1.5  # until the first idle disconnect
    assert pool.peak == 3 and sim_bluez.adapters["hci0"].peak_connections == 3
    for link in links:
        await link.close()


async def test_waiter_evicts_idle_holder(sim_bluez: SimBlueZ) -> None:
    for i in range(1, 5):
        add_lock(sim_bluez, i)
    pool = SlotPool("hci0", 3, min_hold_s=0.05)
    links = [link_for(i, pool) for i in range(1, 5)]
    for i, link in enumerate(links[:3]):
        await link.exchange(req(i), timeout=2.0)
    await asyncio.sleep(0.06)
    t0 = time.perf_counter()
    assert (await links[3].exchange(req(9), timeout=1.0)).seq == 9
    assert time.perf_counter() - t0 < 0.5
    assert links[0].stats.evictions == 1 and not links[0].connected  # least recently used
    assert links[1].connected and links[2].connected
    assert sim_bluez.adapters["hci0"].peak_connections == 3
    for link in links:
        await link.close()


async def test_busy_holders_are_not_evicted(sim_bluez: SimBlueZ) -> None:
    for i in range(1, 5):
        add_lock(sim_bluez, i, latency=0.6 if i < 4 else 0.0)
    pool = SlotPool("hci0", 3, min_hold_s=0.0)
    links = [link_for(i, pool) for i in range(1, 5)]
    busy = [asyncio.create_task(lk.exchange(req(i), timeout=2.0)) for i, lk in enumerate(links[:3])]
    await asyncio.sleep(0.2)
    assert pool.in_use == 3
    with pytest.raises(LockOfflineError, match="no free connection slot"):
        await links[3].exchange(req(9), timeout=0.1)
    assert [r.seq for r in await asyncio.gather(*busy)] == [0, 1, 2]
    assert (await links[3].exchange(req(10), timeout=1.0)).seq == 10  # now one is evictable
    for link in links:
        await link.close()


async def test_busy_locks_take_turns_with_waiting_ones(sim_bluez: SimBlueZ) -> None:
    for i in (1, 2):
        add_lock(sim_bluez, i, latency=0.01)
    pool = SlotPool("hci0", 1, min_hold_s=0.1)
    links = [link_for(i, pool) for i in (1, 2)]
    counts = [0, 0]
    stop = time.perf_counter() + 1.0

    async def worker(k: int) -> None:
        while time.perf_counter() < stop:
            await links[k].exchange(req(counts[k]), timeout=1.0)
            counts[k] += 1

    await asyncio.gather(worker(0), worker(1))  # neither may starve or time out
    assert min(counts) >= 10
    assert links[0].stats.evictions >= 2 and links[1].stats.evictions >= 2
    assert sim_bluez.adapters["hci0"].peak_connections == 1
    for link in links:
        await link.close()


async def test_many_locks_share_three_slots_concurrently(sim_bluez: SimBlueZ) -> None:
    sim_bluez.adapters["hci0"].max_connections = 3  # the controller refuses a 4th link
    for i in range(1, 7):
        add_lock(sim_bluez, i, latency=0.01)
    pool = SlotPool("hci0", 3, min_hold_s=0.05)
    links = [link_for(i, pool) for i in range(1, 7)]

    async def worker(link: BleLink, base: int) -> int:
        done = 0
        for n in range(8):
            await link.exchange(req(base + n), timeout=2.0)
            done += 1
        return done

    results = await asyncio.gather(*(worker(lk, 100 * i) for i, lk in enumerate(links)))
    assert results == [8] * 6
    assert sim_bluez.adapters["hci0"].peak_connections <= 3 and pool.peak == 3
    for link in links:
        await link.close()


def test_make_ble_drivers_shares_one_pool_per_adapter() -> None:
    locks = [
        LockConfig(id=f"l{i}", door_id=f"d{i}", driver="ble", address=mac(i), adapter=a, key=KEY_HEX)
        for i, a in ((1, "hci0"), (2, "hci0"), (3, "hci1"), (4, None))
    ]
    locks.append(LockConfig(id="s", door_id="ds", driver="memory"))
    drivers = make_ble_drivers(locks, BleSection(max_connections_per_adapter=2, idle_disconnect_s=5))
    assert set(drivers) == {"l1", "l2", "l3", "l4"}
    links = {k: d._link for k, d in drivers.items()}  # type: ignore[attr-defined]
    assert all(isinstance(lk, BleLink) for lk in links.values())
    assert links["l1"].pool is links["l2"].pool and links["l1"].pool is not links["l3"].pool
    assert links["l1"].pool.size == 2 and links["l1"].idle_disconnect_s == 5
    assert all(d.transport == "ble" for d in drivers.values())


def test_make_ble_drivers_rejects_bad_or_duplicate_macs() -> None:
    dup = [
        LockConfig(id=f"l{i}", door_id=f"d{i}", driver="ble", address=MAC.lower(), key=KEY_HEX)
        for i in (1, 2)
    ]
    with pytest.raises(ConfigError, match="also lock l1"):
        make_ble_drivers(dup, BleSection())
    bad = [LockConfig(id="x", door_id="dx", driver="ble", address="not-a-mac", key=KEY_HEX)]
    with pytest.raises(ConfigError, match="MAC"):
        make_ble_drivers(bad, BleSection())


# ---- full LockLinkDriver over BLE against simulated locks (drivers.sim.lockside) -------------
KEY = bytes.fromhex(KEY_HEX)
T0 = 1_700_000_000


def add_sim_lock(sim: SimBlueZ, i: int, **lock_kw: object) -> SimulatedLock:
    """A LockLink lock (model + endpoint on a SimBus) advertising as LL-<serial> on hci0."""
    lock = SimulatedLock(serial=f"SN{i:06d}", **lock_kw)  # type: ignore[arg-type]
    sim.add_peripheral("hci0", mac(i), f"LL-{lock.serial}", SimBus([LockEndpoint(lock, KEY)]))
    return lock


async def test_driver_over_ble_set_read_back_clear(sim_bluez: SimBlueZ) -> None:
    lock = add_sim_lock(sim_bluez, 1)
    cfg = LockConfig(id="front", door_id="d1", driver="ble", address=mac(1), adapter="hci0", key=KEY_HEX)
    driver = make_ble_drivers([cfg], BleSection(response_timeout_s=1.0))["front"]
    info = await driver.get_info()
    assert info.serial == "SN000001" and info.slots == lock.info().slots
    await driver.set_time(T0)
    pin = SlotWrite(3, CredentialType.PIN, b"R" * 16, T0, T0 + 3600, b"482913")
    await driver.set_credential(pin)
    assert (await driver.get_credential(3)).matches(pin)
    assert (await driver.list_slots())[1] == frozenset({3})
    await driver.clear_credential(3)
    assert not (await driver.get_credential(3)).occupied
    await driver.close()


async def test_driver_over_ble_survives_link_loss(sim_bluez: SimBlueZ) -> None:
    add_sim_lock(sim_bluez, 1)
    cfg = LockConfig(id="front", door_id="d1", driver="ble", address=mac(1), adapter="hci0", key=KEY_HEX)
    driver = make_ble_drivers([cfg], BleSection(response_timeout_s=1.0))["front"]
    pin = SlotWrite(1, CredentialType.PIN, b"Q" * 16, T0, T0 + 60, b"1234")
    await driver.set_credential(pin)
    sim_bluez.drop_link(mac(1))  # the lock keeps its session, the gateway's link is gone
    assert (await driver.get_credential(1)).matches(pin)  # reconnects on demand
    sim_bluez.peripheral(mac(1)).drop_on_write()
    assert (await driver.get_credential(1)).matches(pin)  # next try reconnects
    await driver.close()


async def test_driver_over_ble_many_locks_three_slots(sim_bluez: SimBlueZ) -> None:
    locks = [add_sim_lock(sim_bluez, i) for i in range(1, 6)]
    cfgs = [
        LockConfig(id=f"l{i}", door_id=f"d{i}", driver="ble", address=mac(i), adapter="hci0", key=KEY_HEX)
        for i in range(1, 6)
    ]
    drivers = make_ble_drivers(cfgs, BleSection(response_timeout_s=1.0))

    async def provision(i: int) -> None:
        d = drivers[f"l{i}"]
        for slot in range(3):
            secret = f"{i}{slot}5{slot}7".encode()
            w = SlotWrite(slot, CredentialType.PIN, bytes([i]) * 16, T0, T0 + 60, secret)
            await d.set_credential(w)
            assert (await d.get_credential(slot)).matches(w)

    await asyncio.gather(*(provision(i) for i in range(1, 6)))
    assert all(lk.list_slots()[1] == frozenset({0, 1, 2}) for lk in locks)
    assert sim_bluez.adapters["hci0"].peak_connections <= 3
    for d in drivers.values():
        await d.close()
