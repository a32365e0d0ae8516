"""LockLinkDriver semantics over an in-memory FrameLink backed by the simulator's lock side.

The same driver over real pseudo-terminals is exercised in test_serial.py.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from drivers.base import (
    Caps,
    CodeNotSupportedError,
    CredentialType,
    CredentialTypeNotSupportedError,
    DriverError,
    DuplicateCodeError,
    EventKind,
    LockAuthFailedError,
    LockFaultError,
    LockFullError,
    LockOfflineError,
    SlotWrite,
)
from drivers.locklink import messages as m
from drivers.locklink.driver import LockLinkDriver
from drivers.locklink.frame import FLAG_RESP, Frame, FrameDecoder, encode
from drivers.locklink.link import FrameLink
from drivers.locklink.messages import Op
from drivers.locklink.status import Status
from drivers.sim.lockside import LockEndpoint
from drivers.sim.model import Faults, SimulatedLock

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
REF = b"R" * 16
T0 = 1_700_000_000
PIN = SlotWrite(2, CredentialType.PIN, REF, T0, T0 + 3600, b"482913")


class SimLink(FrameLink):
    """Frames through wire bytes to a LockEndpoint; can drop or tamper with answers."""

    transport = "serial"

    def __init__(self, ep: LockEndpoint) -> None:
        self.ep = ep
        self.sent: list[Frame] = []
        self.drop_next = 0  # answers to swallow (the lock still acts)
        self.tamper_next = 0  # answers whose last body byte is flipped (CRC recomputed)
        self.busy = False
        self.closed = False

    async def exchange(self, frame: Frame, *, timeout: float) -> Frame:
        assert not self.busy, "driver issued two exchanges at once"
        self.busy = True
        try:
            await asyncio.sleep(0)
            (req,) = FrameDecoder().feed(encode(frame))
            self.sent.append(req)
            resp = self.ep.handle(req)
            if resp is not None and self.drop_next:
                self.drop_next -= 1
                resp = None
            if resp is None:
                raise LockOfflineError("timeout")
            if self.tamper_next:
                self.tamper_next -= 1
                resp = replace(resp, body=resp.body[:-1] + bytes([resp.body[-1] ^ 1]))
            (back,) = FrameDecoder().feed(encode(resp))
            return back
        finally:
            self.busy = False

    async def close(self) -> None:
        self.closed = True


def make(**lock_kw: object) -> tuple[LockLinkDriver, SimLink, SimulatedLock]:
    lock = SimulatedLock(clock=lambda: float(T0), **lock_kw)  # type: ignore[arg-type]
    link = SimLink(LockEndpoint(lock, KEY))
    return LockLinkDriver("front", link, KEY, timeout=0.05, tries=3), link, lock


async def test_every_operation() -> None:
    drv, link, lock = make()
    assert drv.transport == "serial"
    info = await drv.get_info()
    assert info.slots == 32 and info.caps & Caps.PIN and info.clock == T0
    await drv.set_time(T0 + 10)
    assert lock.now() == T0 + 10
    await drv.set_credential(PIN)
    content = await drv.get_credential(2)
    assert content.matches(PIN)
    assert await drv.list_slots() == (32, frozenset({2}))
    lock.set_time(T0 + 100)
    assert lock.press_pin("482913")
    events = await drv.read_events(0, 100)
    assert [e.kind for e in events] == [EventKind.GRANTED] and events[0].ref == REF
    assert await drv.read_events(events[-1].id) == []
    assert await drv.read_events(0, 0) == []
    await drv.clear_credential(2)
    await drv.clear_credential(2)  # idempotent
    assert not (await drv.get_credential(2)).occupied
    assert drv.sessions == 1
    assert link.sent[0].op == Op.HELLO and not link.sent[0].is_secure
    assert all(f.is_secure for f in link.sent[1:])
    await drv.close()
    assert link.closed


async def test_read_events_capped_to_one_frame() -> None:
    drv, _link, lock = make()
    for _ in range(40):
        lock.tamper()
    events = await drv.read_events(0, 32)
    assert len(events) == m.MAX_EVENTS
    assert [e.id for e in events] == list(range(1, m.MAX_EVENTS + 1))
    more = await drv.read_events(events[-1].id, 32)
    assert len(more) == min(m.MAX_EVENTS, 40 - m.MAX_EVENTS)


@pytest.mark.parametrize(
    ("write", "lock_kw", "exc"),
    [
        (replace(PIN, secret=b"12"), {}, CodeNotSupportedError),
        (replace(PIN, secret=b"12ab"), {}, CodeNotSupportedError),
        (replace(PIN, slot=99), {}, LockFaultError),
        (PIN, {"faults": Faults(full=True)}, LockFullError),
        (
            SlotWrite(1, CredentialType.SMARTKEY, REF, 0, 1, bytes(32)),
            {"caps": Caps.PIN | Caps.SCHEDULE},
            CredentialTypeNotSupportedError,
        ),
    ],
)
async def test_status_mapping(
    write: SlotWrite, lock_kw: dict[str, object], exc: type[DriverError]
) -> None:
    drv, _, _ = make(**lock_kw)
    with pytest.raises(exc) as info:
        await drv.set_credential(write)
    assert info.value.lock_id == "front"
    assert write.secret.decode() not in str(info.value)


async def test_duplicate_pin() -> None:
    drv, _, _ = make()
    await drv.set_credential(PIN)
    with pytest.raises(DuplicateCodeError) as info:
        await drv.set_credential(replace(PIN, slot=5))
    assert not info.value.retryable
    assert "482913" not in str(info.value)


async def test_unencodable_request_is_not_retryable() -> None:
    drv, link, _ = make()
    with pytest.raises(LockFaultError) as info:
        await drv.clear_credential(70_000)
    assert not info.value.retryable
    assert link.sent == []
    with pytest.raises(CodeNotSupportedError):
        await drv.set_credential(replace(PIN, secret=b"1" * 300))


async def test_timeout_retries_same_seq_new_ctr() -> None:
    drv, link, lock = make()
    await drv.get_info()
    link.drop_next = 2
    await drv.set_credential(PIN)
    tries = [f for f in link.sent if f.op == Op.SET_CREDENTIAL]
    assert len(tries) == 3
    assert len({f.seq for f in tries}) == 1
    assert [f.ctr for f in tries] == sorted({f.ctr for f in tries})
    assert lock.get_credential(2)[1] is not None


async def test_offline_after_tries_then_new_session() -> None:
    drv, link, _ = make()
    await drv.get_info()
    link.drop_next = 3
    with pytest.raises(LockOfflineError) as info:
        await drv.list_slots()
    assert info.value.lock_id == "front"
    assert [f.op for f in link.sent[-3:]] == [Op.LIST_SLOTS] * 3
    await drv.list_slots()
    assert drv.sessions == 2  # an offline lock may have lost our session: start afresh


async def test_hello_tries_use_fresh_nonce_and_seq() -> None:
    drv, link, _ = make()
    link.drop_next = 2
    await drv.get_info()
    hellos = [f for f in link.sent if f.op == Op.HELLO]
    assert len(hellos) == 3
    assert len({f.seq for f in hellos}) == 3 and len({f.body for f in hellos}) == 3


async def test_silent_lock_goes_offline() -> None:
    drv, link, _lock = make(faults=Faults(drop_rate=1.0))
    with pytest.raises(LockOfflineError):
        await drv.get_info()
    assert len(link.sent) == 3


async def test_tampered_answer_treated_as_no_answer() -> None:
    drv, link, _ = make()
    await drv.get_info()
    link.tamper_next = 1
    await drv.list_slots()
    tries = [f for f in link.sent if f.op == Op.LIST_SLOTS]
    assert len(tries) == 2 and tries[0].seq == tries[1].seq


async def test_reboot_starts_new_session_once() -> None:
    drv, link, _lock = make()
    await drv.set_credential(PIN)
    link.ep.reboot()
    content = await drv.get_credential(2)
    assert content.matches(PIN)
    assert drv.sessions == 2
    ops = [f.op for f in link.sent]
    assert ops[-3:] == [Op.GET_CREDENTIAL, Op.HELLO, Op.GET_CREDENTIAL]


class ForgetfulEndpoint(LockEndpoint):
    """A broken lock that forgets every session right after the handshake."""

    def handle(self, frame: Frame) -> Frame | None:
        resp = super().handle(frame)
        self.forget_session()
        return resp


async def test_persistent_auth_required_is_auth_failure() -> None:
    lock = SimulatedLock(clock=lambda: float(T0))
    link = SimLink(ForgetfulEndpoint(lock, KEY))
    drv = LockLinkDriver("front", link, KEY, timeout=0.05)
    with pytest.raises(LockAuthFailedError):
        await drv.get_info()
    assert [f.op for f in link.sent] == [Op.HELLO, Op.GET_INFO, Op.HELLO, Op.GET_INFO]


async def test_wrong_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    lock = SimulatedLock(clock=lambda: float(T0))
    link = SimLink(LockEndpoint(lock, bytes(16)))
    drv = LockLinkDriver("front", link, KEY, timeout=0.05)
    with pytest.raises(LockAuthFailedError) as info:
        await drv.get_info()
    assert not info.value.retryable
    assert [f.op for f in link.sent] == [Op.HELLO]  # no sealed request to an unproven lock
    assert KEY.hex() not in str(info.value) and KEY.hex() not in caplog.text


async def test_wrong_key_fault_in_lock() -> None:
    drv, _, _ = make(faults=Faults(wrong_key=True))
    with pytest.raises(LockAuthFailedError):
        await drv.list_slots()


async def test_clear_answers_other_than_auth_required_ignored() -> None:
    class Spoofer(LockEndpoint):
        def handle(self, frame: Frame) -> Frame | None:
            if frame.op == Op.LIST_SLOTS:
                return Frame(frame.addr, FLAG_RESP, frame.seq, frame.op, 0, bytes([Status.OK]))
            return super().handle(frame)

    lock = SimulatedLock(clock=lambda: float(T0))
    drv = LockLinkDriver("front", SimLink(Spoofer(lock, KEY)), KEY, timeout=0.05)
    with pytest.raises(LockOfflineError):
        await drv.list_slots()


async def test_calls_are_serialised() -> None:
    drv, _link, _ = make()
    writes = [replace(PIN, slot=i, secret=f"{1000 + i}".encode()) for i in range(10)]
    await asyncio.gather(*(drv.set_credential(w) for w in writes), drv.get_info())
    _slots, occ = await drv.list_slots()
    assert occ == frozenset(range(10))


async def test_no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    drv, link, _lock = make()
    link.drop_next = 1
    await drv.set_credential(PIN)
    link.ep.reboot()
    await drv.set_credential(PIN)
    assert "482913" not in caplog.text and KEY.hex() not in caplog.text
    assert "482913" not in repr(drv) and "482913" not in repr(PIN)


def test_constructor_validation() -> None:
    link = SimLink(LockEndpoint(SimulatedLock(), KEY))
    with pytest.raises(ValueError):
        LockLinkDriver("x", link, KEY[:8])
    with pytest.raises(ValueError):
        LockLinkDriver("x", link, KEY, tries=0)
    assert "00112233" not in repr(LockLinkDriver("x", link, KEY))
