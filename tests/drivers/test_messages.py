"""Round-trip and rejection tests for the LockLink operation codecs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import (
    SLOT_NONE,
    Caps,
    CredentialType,
    EventKind,
    LockEvent,
    LockInfo,
    SlotContent,
    SlotWrite,
    secret_digest,
)
from drivers.locklink import messages as m
from drivers.locklink.frame import MAX_BODY
from drivers.locklink.status import Status

REF = bytes(range(16))
INFO = LockInfo("LL-Door 2000", "1.2.3", "SN0001", Caps(0b1111), 64, 4, 8, 87, 1_700_000_000)
WRITE = SlotWrite(3, CredentialType.PIN, REF, 1_700_000_000, 1_800_000_000, b"123456")


def test_op_codes() -> None:
    assert [int(o) for o in m.Op] == [0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0x13, 0x20]


def test_hello_both_directions() -> None:
    ng = bytes(range(16))
    assert m.decode_hello_req(m.encode_hello_req(ng)) == ng
    resp = m.HelloResp(bytes(16), bytes(range(1, 17)))
    body = m.encode_hello_resp(resp)
    assert len(body) == 1 + 16 + 16 + 1 and body[0] == Status.OK and body[-1] == 1
    assert m.decode_hello_resp(body) == resp
    with pytest.raises(m.MessageError):
        m.decode_hello_req(ng[:15])
    with pytest.raises(m.MessageError):
        m.decode_hello_resp(body[:-1])


def test_info_both_directions() -> None:
    assert m.encode_get_info_req() == b""
    m.decode_get_info_req(b"")
    with pytest.raises(m.MessageError):
        m.decode_get_info_req(b"x")
    body = m.encode_info_resp(INFO)
    assert len(body) == 1 + 51
    assert body[1:17] == b"LL-Door 2000\0\0\0\0"
    assert m.decode_info_resp(body) == INFO
    with pytest.raises(m.MessageError):
        m.decode_info_resp(body + b"\0")
    with pytest.raises(m.MessageError):
        m.encode_info_resp(LockInfo("x" * 17, "", "", Caps(0), 1, 4, 8, 50, 0))
    with pytest.raises(m.MessageError):
        m.encode_info_resp(LockInfo("é", "", "", Caps(0), 1, 4, 8, 50, 0))
    bad_battery = body[:-5] + bytes([101]) + body[-4:]
    with pytest.raises(m.MessageError):
        m.decode_info_resp(bad_battery)


def test_set_time_and_status() -> None:
    assert m.encode_set_time_req(0x01020304) == b"\x01\x02\x03\x04"
    assert m.decode_set_time_req(b"\x01\x02\x03\x04") == 0x01020304
    with pytest.raises(m.MessageError):
        m.encode_set_time_req(2**32)
    with pytest.raises(m.MessageError):
        m.decode_set_time_req(b"\x01")
    for st_ in Status:
        assert m.decode_status_resp(m.encode_status_resp(st_)) == st_
        assert m.response_status(m.encode_status_resp(st_)) == st_
    with pytest.raises(m.MessageError):
        m.response_status(b"")
    with pytest.raises(m.MessageError):
        m.decode_status_resp(b"\x00\x00")


def test_set_credential_both_directions() -> None:
    body = m.encode_set_credential_req(WRITE)
    assert body[:3] == b"\x00\x03\x01" and body[3:19] == REF and body[27] == 6
    assert body[28:] == b"123456"
    back = m.decode_set_credential_req(body)
    assert back == WRITE and back.secret == WRITE.secret
    key = SlotWrite(0, CredentialType.SMARTKEY, REF, 0, 2**32 - 1, bytes(range(32)))
    assert m.decode_set_credential_req(m.encode_set_credential_req(key)) == key
    with pytest.raises(m.MessageError):
        m.decode_set_credential_req(body[:-1])  # len field disagrees
    with pytest.raises(m.MessageError):
        m.decode_set_credential_req(body[:10])
    with pytest.raises(m.UnknownCredentialTypeError):
        m.decode_set_credential_req(body[:2] + b"\x09" + body[3:])
    with pytest.raises(m.MessageError):
        m.encode_set_credential_req(SlotWrite(70000, CredentialType.PIN, REF, 0, 1, b"1234"))
    with pytest.raises(m.MessageError):
        m.encode_set_credential_req(SlotWrite(1, CredentialType.PIN, REF[:8], 0, 1, b"1234"))
    with pytest.raises(m.MessageError):
        m.encode_set_credential_req(SlotWrite(1, CredentialType.PIN, REF, 0, 1, bytes(256)))


def test_secret_not_in_errors() -> None:
    body = m.encode_set_credential_req(WRITE)
    with pytest.raises(m.MessageError) as exc:
        m.decode_set_credential_req(body + b"9")
    assert "123456" not in str(exc.value)


def test_clear_and_get_credential() -> None:
    assert m.decode_clear_credential_req(m.encode_clear_credential_req(513)) == 513
    assert m.decode_get_credential_req(m.encode_get_credential_req(0xFFFF)) == 0xFFFF
    with pytest.raises(m.MessageError):
        m.decode_clear_credential_req(b"\x00")
    with pytest.raises(m.MessageError):
        m.encode_get_credential_req(-1)
    full = SlotContent(3, True, 1, REF, 10, 20, secret_digest(b"123456"))
    body = m.encode_credential_resp(full)
    assert len(body) == 1 + 34
    back = m.decode_credential_resp(body, 3)
    assert back == full and back.matches(WRITE) is False
    assert m.decode_credential_resp(m.encode_credential_resp(SlotContent(4, False)), 4) == (
        SlotContent(4, False)
    )
    with pytest.raises(m.MessageError):
        m.decode_credential_resp(b"\x00\x02" + body[2:], 3)  # occupied = 2
    with pytest.raises(m.MessageError):
        m.decode_credential_resp(bytes([Status.BAD_SLOT]), 3)


def test_credential_matches_write() -> None:
    c = SlotContent(
        3, True, 1, REF, WRITE.valid_from, WRITE.valid_until, secret_digest(WRITE.secret)
    )
    assert m.decode_credential_resp(m.encode_credential_resp(c), 3).matches(WRITE)


@given(
    st.integers(0, m.MAX_LIST_SLOTS).flatmap(
        lambda n: st.tuples(st.just(n), st.frozensets(st.integers(0, max(n - 1, 0)), max_size=n))
    )
)
def test_list_slots_roundtrip(arg: tuple[int, frozenset[int]]) -> None:
    slots, occ = arg
    if slots == 0:
        occ = frozenset()
    body = m.encode_list_slots_resp(slots, occ)
    assert len(body) <= MAX_BODY - 8
    assert m.decode_list_slots_resp(body) == (slots, occ)


def test_list_slots_layout_and_errors() -> None:
    assert m.encode_list_slots_req() == b""
    m.decode_list_slots_req(b"")
    body = m.encode_list_slots_resp(10, {0, 9})
    assert body == b"\x00\x00\x0a\x01\x02"
    with pytest.raises(m.MessageError):
        m.decode_list_slots_resp(b"\x00\x00\x0a\x01\x04")  # bit 10 beyond 10 slots
    with pytest.raises(m.MessageError):
        m.decode_list_slots_resp(b"\x00\x00\x0a\x01")
    with pytest.raises(m.MessageError):
        m.encode_list_slots_resp(10, {10})
    with pytest.raises(m.MessageError):
        m.encode_list_slots_resp(m.MAX_LIST_SLOTS + 1, set())


def test_events_both_directions() -> None:
    assert m.decode_read_events_req(m.encode_read_events_req(41, 18)) == (41, 18)
    with pytest.raises(m.MessageError):
        m.encode_read_events_req(0, 256)
    evs = [
        LockEvent(42, 1_700_000_001, EventKind.GRANTED, 3, REF),
        LockEvent(43, 1_700_000_002, EventKind.TAMPER, SLOT_NONE, bytes(16)),
        LockEvent(44, 1_700_000_003, 99, SLOT_NONE, bytes(16)),
    ]
    body = m.encode_events_resp(evs)
    assert len(body) == 2 + 3 * 27
    back = m.decode_events_resp(body)
    assert back == evs and isinstance(back[0].kind, EventKind) and back[2].kind == 99
    assert m.decode_events_resp(m.encode_events_resp([])) == []
    full = [LockEvent(i, 0, 1, 0, REF) for i in range(m.MAX_EVENTS)]
    assert len(m.encode_events_resp(full)) <= MAX_BODY - 8
    with pytest.raises(m.MessageError):
        m.encode_events_resp([*full, full[0]])
    with pytest.raises(m.MessageError):
        m.decode_events_resp(body[:-1])
    with pytest.raises(m.MessageError):
        m.decode_events_resp(b"\x00")
