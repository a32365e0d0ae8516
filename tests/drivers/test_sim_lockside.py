"""Tests for the sans-I/O lock endpoint and bus (drivers.sim.lockside) with gateway-side frames."""

from __future__ import annotations

import hmac
import os
import random
from dataclasses import replace

import pytest

from drivers.base import Caps, CredentialType, EventKind, SlotWrite, secret_digest
from drivers.locklink import messages as m
from drivers.locklink.frame import FLAG_RESP, FLAG_SEC, Frame, FrameDecoder, encode
from drivers.locklink.messages import Op
from drivers.locklink.session import SecureChannel, lock_proof, session_key
from drivers.locklink.status import Status
from drivers.sim.lockside import LockEndpoint, SimBus
from drivers.sim.model import SimulatedLock

KEY = bytes(range(16))
REF = b"R" * 16
T0 = 1_700_000_000


class Gateway:
    """A minimal gateway side built from the protocol modules."""

    def __init__(self, ep: LockEndpoint, key: bytes = KEY, addr: int = 0) -> None:
        self.ep = ep
        self.key = key
        self.addr = addr
        self.seq = 0
        self.chan: SecureChannel | None = None

    def frame(self, op: int, body: bytes) -> Frame:
        self.seq += 1
        return Frame(self.addr, 0, self.seq, op, 0, body)

    def hello(self) -> Frame | None:
        ng = os.urandom(16)
        req = self.frame(Op.HELLO, m.encode_hello_req(ng))
        resp = self.ep.handle(req)
        assert resp is not None and not resp.is_secure and resp.ctr == 0
        assert (resp.seq, resp.op, resp.addr) == (req.seq, Op.HELLO, req.addr)
        hr = m.decode_hello_resp(resp.body)
        assert hr.proto == 1
        if hmac.compare_digest(hr.proof, lock_proof(self.key, ng, hr.nl)):
            self.chan = SecureChannel(session_key(self.key, ng, hr.nl), ng, side="gateway")
        else:
            self.chan = None
        return resp

    def call(self, op: int, body: bytes = b"") -> bytes:
        assert self.chan is not None
        req = self.chan.seal(self.frame(op, body))
        resp = self.ep.handle(req)
        assert resp is not None and resp.is_response and resp.is_secure
        assert (resp.seq, resp.op) == (req.seq, op)
        opened = self.chan.open(resp)
        assert opened is not None
        return opened.body


@pytest.fixture
def lock() -> SimulatedLock:
    return SimulatedLock(slots=16, clock=lambda: T0)


@pytest.fixture
def ep(lock: SimulatedLock) -> LockEndpoint:
    return LockEndpoint(lock, KEY)


@pytest.fixture
def gw(ep: LockEndpoint) -> Gateway:
    g = Gateway(ep)
    g.hello()
    assert g.chan is not None
    return g


def test_hello_proof(ep: LockEndpoint) -> None:
    g = Gateway(ep)
    g.hello()
    assert g.chan is not None and ep.has_session


def test_wrong_key_fault_fails_proof(ep: LockEndpoint, lock: SimulatedLock) -> None:
    lock.faults.wrong_key = True
    g = Gateway(ep)
    g.hello()
    assert g.chan is None


def test_gateway_with_wrong_key_gets_silence(ep: LockEndpoint) -> None:
    g = Gateway(ep, key=b"\x99" * 16)
    g.hello()
    assert g.chan is None
    # forcing a session with our wrong key: the lock cannot open our frames -> silence
    g.chan = SecureChannel(b"\x01" * 16, b"\x02" * 16, side="gateway")
    assert ep.handle(g.chan.seal(g.frame(Op.GET_INFO, b""))) is None


def test_auth_required_without_session(ep: LockEndpoint) -> None:
    g = Gateway(ep)
    resp = ep.handle(g.frame(Op.GET_INFO, b""))
    assert resp is not None and resp.flags == FLAG_RESP and resp.ctr == 0
    assert m.decode_status_resp(resp.body) == Status.AUTH_REQUIRED
    # a sealed frame without a lock-side session also gets clear AUTH_REQUIRED
    g.chan = SecureChannel(b"\x01" * 16, b"\x02" * 16, side="gateway")
    resp = ep.handle(g.chan.seal(g.frame(Op.LIST_SLOTS, b"")))
    assert resp is not None and not resp.is_secure
    assert m.decode_status_resp(resp.body) == Status.AUTH_REQUIRED


def test_clear_request_within_session_gets_auth_required(gw: Gateway, ep: LockEndpoint) -> None:
    resp = ep.handle(gw.frame(Op.GET_INFO, b""))
    assert resp is not None and m.decode_status_resp(resp.body) == Status.AUTH_REQUIRED


def test_get_info(gw: Gateway) -> None:
    info = m.decode_info_resp(gw.call(Op.GET_INFO))
    assert (info.serial, info.slots, info.clock) == ("SIM00001", 16, T0)
    assert info.caps & Caps.SCHEDULE


def test_secure_response_counter(gw: Gateway) -> None:
    assert gw.chan is not None
    for i in range(1, 4):
        gw.call(Op.GET_INFO)
        assert gw.chan.rx_ctr == i  # the lock numbers its frames from 1


def test_replay_dropped(gw: Gateway, ep: LockEndpoint) -> None:
    assert gw.chan is not None
    req = gw.chan.seal(gw.frame(Op.GET_INFO, b""))
    assert ep.handle(req) is not None
    assert ep.handle(req) is None  # same ctr again
    assert ep.stats["rejected"] == 1


def test_bad_tag_dropped(gw: Gateway, ep: LockEndpoint) -> None:
    assert gw.chan is not None
    req = gw.chan.seal(gw.frame(Op.GET_INFO, b""))
    bad = replace(req, body=req.body[:-1] + bytes([req.body[-1] ^ 1]))
    assert ep.handle(bad) is None
    assert ep.handle(req) is not None  # the genuine frame still works


def test_wrong_addr_and_responses_silent(lock: SimulatedLock) -> None:
    ep = LockEndpoint(lock, KEY, addr=5)
    g = Gateway(ep, addr=6)
    assert ep.handle(g.frame(Op.HELLO, bytes(16))) is None
    g.addr = 5
    assert ep.handle(replace(g.frame(Op.HELLO, bytes(16)), flags=FLAG_RESP)) is None
    resp = ep.handle(g.frame(Op.HELLO, bytes(16)))
    assert resp is not None and resp.addr == 5


def test_new_hello_replaces_session(gw: Gateway, ep: LockEndpoint) -> None:
    old = gw.chan
    assert old is not None
    stale = old.seal(gw.frame(Op.GET_INFO, b""))
    gw.hello()
    assert ep.handle(stale) is None  # sealed under the old session
    m.decode_info_resp(gw.call(Op.GET_INFO))


def test_reboot_forgets_session_and_clock(gw: Gateway, ep: LockEndpoint) -> None:
    ep.reboot()
    assert gw.chan is not None
    resp = ep.handle(gw.chan.seal(gw.frame(Op.GET_INFO, b"")))
    assert resp is not None and m.decode_status_resp(resp.body) == Status.AUTH_REQUIRED
    gw.hello()
    assert m.decode_info_resp(gw.call(Op.GET_INFO)).clock == 0
    events = m.decode_events_resp(gw.call(Op.READ_EVENTS, m.encode_read_events_req(0, 10)))
    assert [e.kind for e in events] == [EventKind.CLOCK_LOST]
    assert m.decode_status_resp(gw.call(Op.SET_TIME, m.encode_set_time_req(T0))) == Status.OK
    assert m.decode_info_resp(gw.call(Op.GET_INFO)).clock == T0


def test_credential_ops(gw: Gateway, lock: SimulatedLock) -> None:
    w = SlotWrite(3, CredentialType.PIN, REF, T0 - 1, T0 + 1, b"24680")
    assert m.decode_status_resp(gw.call(Op.SET_CREDENTIAL, m.encode_set_credential_req(w))) == 0
    content = m.decode_credential_resp(
        gw.call(Op.GET_CREDENTIAL, m.encode_get_credential_req(3)), 3
    )
    assert content.matches(w) and content.digest == secret_digest(b"24680")
    assert m.decode_list_slots_resp(gw.call(Op.LIST_SLOTS)) == (16, frozenset({3}))
    assert lock.press_pin("24680")
    dup = replace(w, slot=4)
    assert (
        m.decode_status_resp(gw.call(Op.SET_CREDENTIAL, m.encode_set_credential_req(dup)))
        == Status.DUPLICATE
    )
    assert (
        m.decode_status_resp(gw.call(Op.CLEAR_CREDENTIAL, m.encode_clear_credential_req(3)))
        == Status.OK
    )
    assert m.decode_list_slots_resp(gw.call(Op.LIST_SLOTS)) == (16, frozenset())
    empty = m.decode_credential_resp(gw.call(Op.GET_CREDENTIAL, m.encode_get_credential_req(3)), 3)
    assert not empty.occupied
    events = m.decode_events_resp(gw.call(Op.READ_EVENTS, m.encode_read_events_req(0, 255)))
    assert events[0].kind == EventKind.GRANTED and events[0].slot == 3 and events[0].ref == REF


@pytest.mark.parametrize(
    ("op", "body", "status"),
    [
        (Op.GET_CREDENTIAL, m.encode_get_credential_req(16), Status.BAD_SLOT),
        (Op.CLEAR_CREDENTIAL, m.encode_clear_credential_req(99), Status.BAD_SLOT),
        (Op.GET_INFO, b"x", Status.BAD_REQUEST),
        (Op.SET_TIME, b"\0\0", Status.BAD_REQUEST),
        (Op.SET_CREDENTIAL, b"\0" * 5, Status.BAD_REQUEST),
        (0x7E, b"", Status.UNKNOWN_OP),
        (Op.HELLO, bytes(16), Status.BAD_REQUEST),
    ],
)
def test_error_statuses(gw: Gateway, op: int, body: bytes, status: Status) -> None:
    assert m.response_status(gw.call(op, body)) == status


def test_unknown_credential_type_is_unsupported(gw: Gateway) -> None:
    body = bytearray(
        m.encode_set_credential_req(SlotWrite(0, CredentialType.PIN, REF, 0, 1, b"1234"))
    )
    body[2] = 9  # type byte
    assert m.decode_status_resp(gw.call(Op.SET_CREDENTIAL, bytes(body))) == Status.UNSUPPORTED


def test_invalid_code_and_full(gw: Gateway, lock: SimulatedLock) -> None:
    bad = SlotWrite(0, CredentialType.PIN, REF, 0, 1, b"12")
    assert (
        m.decode_status_resp(gw.call(Op.SET_CREDENTIAL, m.encode_set_credential_req(bad)))
        == Status.INVALID_CODE
    )
    lock.faults.full = True
    ok = replace(bad, secret=b"1234")
    assert (
        m.decode_status_resp(gw.call(Op.SET_CREDENTIAL, m.encode_set_credential_req(ok)))
        == Status.FULL
    )


def test_events_capped_per_answer(gw: Gateway, lock: SimulatedLock) -> None:
    for _ in range(40):
        lock.tamper()
    events = m.decode_events_resp(gw.call(Op.READ_EVENTS, m.encode_read_events_req(0, 255)))
    assert len(events) == m.MAX_EVENTS and events[0].id == 1


def test_no_events_cap() -> None:
    ep = LockEndpoint(SimulatedLock(caps=Caps.PIN), KEY)
    g = Gateway(ep)
    g.hello()
    body = g.call(Op.READ_EVENTS, m.encode_read_events_req(0, 1))
    assert m.response_status(body) == Status.UNKNOWN_OP


def test_drop_fault_acts_but_stays_silent(
    gw: Gateway, ep: LockEndpoint, lock: SimulatedLock
) -> None:
    assert gw.chan is not None
    lock.faults.drop_rate = 1.0
    w = SlotWrite(1, CredentialType.PIN, REF, 0, 1, b"1357")
    req = gw.chan.seal(gw.frame(Op.SET_CREDENTIAL, m.encode_set_credential_req(w)))
    assert ep.handle(req) is None
    assert lock.list_slots()[1] == frozenset({1})  # the write happened; only the answer is lost
    lock.faults.drop_rate = 0.0
    retry = gw.chan.seal(replace(req, ctr=0, flags=0, body=m.encode_set_credential_req(w)))
    resp = ep.handle(retry)  # same seq, new ctr: idempotent
    assert resp is not None and gw.chan.open(resp) is not None


# --- SimBus --------------------------------------------------------------------------


def _bus_hello(bus: SimBus, addr: int, seq: int = 1) -> list[tuple[float, bytes]]:
    return bus.feed(encode(Frame(addr, 0, seq, Op.HELLO, 0, bytes(16))))


def test_bus_routes_by_address() -> None:
    eps = [LockEndpoint(SimulatedLock(serial=f"L{a}"), KEY, addr=a) for a in (1, 2, 3)]
    bus = SimBus(eps)
    out = _bus_hello(bus, 2)
    assert len(out) == 1
    frames = FrameDecoder().feed(out[0][1])
    assert frames[0].addr == 2 and frames[0].flags == FLAG_RESP
    assert [e.has_session for e in eps] == [False, True, False]
    assert _bus_hello(bus, 9) == []
    with pytest.raises(ValueError):
        bus.add(LockEndpoint(SimulatedLock(), KEY, addr=1))


def test_bus_split_stream_and_garbage() -> None:
    bus = SimBus([LockEndpoint(SimulatedLock(), KEY)])
    wire = encode(Frame(0, 0, 7, Op.HELLO, 0, bytes(16)))
    assert bus.feed(b"\x05garbage\x00") == []
    assert bus.dropped_input == 1
    assert bus.feed(wire[:5]) == []
    out = bus.feed(wire[5:])
    assert len(out) == 1 and FrameDecoder().feed(out[0][1])[0].seq == 7


def test_bus_latency_and_corrupt() -> None:
    lock = SimulatedLock()
    bus = SimBus([LockEndpoint(lock, KEY)], seed=1)
    lock.faults.latency_s = 0.25
    lock.faults.corrupt_rate = 1.0
    for seq in range(20):
        [(delay, wire)] = _bus_hello(bus, 0, seq)
        assert delay == 0.25
        assert wire.count(0) == 1 and wire.endswith(b"\0")
        dec = FrameDecoder()
        assert dec.feed(wire) == [] and dec.dropped == 1


def test_bus_drop_rate_deterministic() -> None:
    def run() -> list[int]:
        lock = SimulatedLock()
        lock.faults.drop_rate = 0.5
        ep = LockEndpoint(lock, KEY, rng=random.Random(3))
        bus = SimBus([ep], seed=3)
        return [len(_bus_hello(bus, 0, s)) for s in range(50)]

    first = run()
    assert first == run()
    assert 10 < sum(first) < 40


def test_sec_flag_constant() -> None:
    assert FLAG_SEC == 0x02  # the endpoint relies on Frame.is_secure
