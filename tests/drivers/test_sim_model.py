"""Tests for the simulated lock's rules (drivers.sim.model)."""

from __future__ import annotations

import pytest

from drivers.base import (
    SLOT_NONE,
    Caps,
    CredentialType,
    EventKind,
    SlotWrite,
    secret_digest,
)
from drivers.locklink.status import Status
from drivers.sim.model import Faults, SimulatedLock

REF = bytes(range(16))
REF2 = bytes(range(16, 32))
KEY = bytes(range(32))
T0 = 1_700_000_000


class FakeClock:
    """A settable clock."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def pin(slot: int, code: str, ref: bytes = REF, start: int = 0, end: int = 0xFFFFFFFF) -> SlotWrite:
    return SlotWrite(slot, CredentialType.PIN, ref, start, end, code.encode())


def skey(slot: int, key: bytes = KEY, start: int = 0, end: int = 0xFFFFFFFF) -> SlotWrite:
    return SlotWrite(slot, CredentialType.SMARTKEY, REF2, start, end, key)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lock(clock: FakeClock) -> SimulatedLock:
    return SimulatedLock(slots=8, clock=clock)


def test_info(lock: SimulatedLock) -> None:
    info = lock.info()
    assert (info.model, info.firmware, info.serial) == ("LL-SIM", "1.0.0", "SIM00001")
    assert info.caps == Caps.SCHEDULE | Caps.PIN | Caps.SMARTKEY | Caps.EVENTS
    assert (info.slots, info.pin_min, info.pin_max, info.battery) == (8, 4, 8, 100)
    assert info.clock == T0


def test_set_and_get_pin(lock: SimulatedLock) -> None:
    assert lock.set_credential(pin(3, "123456", start=10, end=20)) == Status.OK
    status, content = lock.get_credential(3)
    assert status == Status.OK and content is not None
    assert content.occupied and content.type == CredentialType.PIN
    assert (content.ref, content.valid_from, content.valid_until) == (REF, 10, 20)
    assert content.digest == secret_digest(b"123456")
    assert content.matches(pin(3, "123456", start=10, end=20))
    assert lock.list_slots() == (8, frozenset({3}))


def test_get_empty_and_bad_slot(lock: SimulatedLock) -> None:
    status, content = lock.get_credential(0)
    assert status == Status.OK and content is not None and not content.occupied
    assert content.digest == b"\0" * 8
    assert lock.get_credential(8) == (Status.BAD_SLOT, None)


def test_bad_slot(lock: SimulatedLock) -> None:
    assert lock.set_credential(pin(8, "1234")) == Status.BAD_SLOT
    assert lock.clear_credential(8) == Status.BAD_SLOT


@pytest.mark.parametrize("code", ["123", "123456789", "12a4", "", "12 34", "١٢٣٤"])
def test_invalid_code(lock: SimulatedLock, code: str) -> None:
    assert lock.set_credential(pin(0, code)) == Status.INVALID_CODE
    assert lock.list_slots()[1] == frozenset()


def test_pin_rules_bounds(clock: FakeClock) -> None:
    lock = SimulatedLock(pin_min=6, pin_max=6, clock=clock)
    assert lock.set_credential(pin(0, "12345")) == Status.INVALID_CODE
    assert lock.set_credential(pin(0, "123456")) == Status.OK


def test_duplicate(lock: SimulatedLock) -> None:
    assert lock.set_credential(pin(0, "1234")) == Status.OK
    assert lock.set_credential(pin(1, "1234")) == Status.DUPLICATE
    # replacing the same slot with the same PIN is not a duplicate (idempotent retry)
    assert lock.set_credential(pin(0, "1234", ref=REF2)) == Status.OK
    assert lock.get_credential(0)[1].ref == REF2  # type: ignore[union-attr]


def test_replace_occupied(lock: SimulatedLock) -> None:
    assert lock.set_credential(pin(0, "1234")) == Status.OK
    assert lock.set_credential(pin(0, "5678")) == Status.OK
    assert lock.get_credential(0)[1].digest == secret_digest(b"5678")  # type: ignore[union-attr]
    assert lock.set_credential(pin(1, "1234")) == Status.OK  # old PIN is gone


def test_unsupported(clock: FakeClock) -> None:
    lock = SimulatedLock(caps=Caps.PIN, clock=clock)
    assert lock.set_credential(skey(0)) == Status.UNSUPPORTED
    lock = SimulatedLock(caps=Caps.SMARTKEY, clock=clock)
    assert lock.set_credential(pin(0, "1234")) == Status.UNSUPPORTED
    assert lock.set_credential(skey(0)) == Status.OK


def test_unknown_type_and_bad_fields(lock: SimulatedLock) -> None:
    w = SlotWrite(0, 9, REF, 0, 1, b"1234")  # type: ignore[arg-type]
    assert lock.set_credential(w) == Status.UNSUPPORTED
    assert lock.set_credential(pin(0, "1234", ref=b"short")) == Status.BAD_REQUEST
    assert lock.set_credential(skey(0, key=b"x" * 31)) == Status.BAD_REQUEST


def test_full_fault(lock: SimulatedLock) -> None:
    lock.faults.full = True
    assert lock.set_credential(pin(0, "1234")) == Status.FULL
    lock.faults.full = False
    assert lock.set_credential(pin(0, "1234")) == Status.OK


def test_clear(lock: SimulatedLock) -> None:
    assert lock.clear_credential(0) == Status.OK  # empty slot succeeds
    lock.set_credential(pin(0, "1234"))
    assert lock.clear_credential(0) == Status.OK
    assert lock.list_slots()[1] == frozenset()
    assert not lock.press_pin("1234")


def test_ignore_clear_fault(lock: SimulatedLock) -> None:
    lock.set_credential(pin(0, "1234"))
    lock.faults = Faults(ignore_clear=True)
    assert lock.clear_credential(0) == Status.OK
    assert lock.list_slots()[1] == frozenset({0})
    assert lock.press_pin("1234")


def test_keypad_grant_and_deny_events(lock: SimulatedLock) -> None:
    lock.set_credential(pin(2, "4321"))
    assert lock.press_pin("4321")
    assert not lock.press_pin("9999")
    granted, denied = lock.read_events(0, 10)
    assert (granted.kind, granted.slot, granted.ref, granted.time) == (
        EventKind.GRANTED,
        2,
        REF,
        T0,
    )
    assert (denied.kind, denied.slot, denied.ref) == (EventKind.DENIED, SLOT_NONE, b"\0" * 16)
    assert denied.id > granted.id


def test_schedule_enforced(lock: SimulatedLock, clock: FakeClock) -> None:
    lock.set_credential(pin(0, "1234", start=T0 + 100, end=T0 + 200))
    assert not lock.press_pin("1234")  # too early
    clock.t = T0 + 100
    assert lock.press_pin("1234")  # valid_from inclusive
    clock.t = T0 + 199
    assert lock.press_pin("1234")
    clock.t = T0 + 200
    assert not lock.press_pin("1234")  # valid_until exclusive


def test_schedule_uses_skew(lock: SimulatedLock) -> None:
    lock.set_credential(pin(0, "1234", start=T0 + 100, end=T0 + 200))
    lock.skew_s = 150
    assert lock.press_pin("1234")
    assert lock.set_time(T0 + 500) == Status.OK
    assert lock.now() == T0 + 500
    assert not lock.press_pin("1234")


def test_no_schedule_cap_ignores_window(clock: FakeClock) -> None:
    lock = SimulatedLock(caps=Caps.PIN, clock=clock)
    lock.set_credential(pin(0, "1234", start=T0 + 100, end=T0 + 200))
    assert lock.press_pin("1234")


def test_smartkey(lock: SimulatedLock, clock: FakeClock) -> None:
    assert lock.set_credential(skey(5, start=T0, end=T0 + 10)) == Status.OK
    assert lock.present_smartkey(KEY)
    assert not lock.present_smartkey(bytes(32))
    clock.t = T0 + 10
    assert not lock.present_smartkey(KEY)
    ev = lock.read_events(0, 1)[0]
    assert (ev.kind, ev.slot, ev.ref) == (EventKind.GRANTED, 5, REF2)


def test_pin_is_not_a_smartkey(lock: SimulatedLock) -> None:
    lock.set_credential(pin(0, "1234"))
    assert not lock.present_smartkey(b"1234")


def test_set_time_range(lock: SimulatedLock) -> None:
    assert lock.set_time(-1) == Status.BAD_REQUEST
    assert lock.set_time(0x1_0000_0000) == Status.BAD_REQUEST


def test_reboot_loses_clock(lock: SimulatedLock, clock: FakeClock) -> None:
    lock.set_credential(pin(0, "1234", start=T0 - 10, end=T0 + 10))
    lock.reboot()
    assert lock.now() == 0
    clock.t += 5
    assert lock.now() == 5
    ev = lock.read_events(0, 10)[-1]
    assert ev.kind == EventKind.CLOCK_LOST and ev.slot == SLOT_NONE
    assert lock.list_slots()[1] == frozenset({0})  # slots survive
    assert not lock.press_pin("1234")  # lock thinks it is 1970
    lock.set_time(T0)
    assert lock.press_pin("1234")


def test_events_bounded_and_ordered(lock: SimulatedLock) -> None:
    for _ in range(1000):
        lock.tamper()
    evs = lock.read_events(0, 255)
    assert len(evs) == 255
    assert evs[0].id > 1  # oldest ones were dropped
    ids = [e.id for e in lock.read_events(0, 10_000)]
    assert len(ids) >= 256 and ids == sorted(ids) and ids[-1] == 1000
    assert lock.read_events(1000 - 256, 1000)[0].id == 1000 - 255
    assert lock.read_events(1000, 10) == []
    assert lock.last_event_id == 1000


def test_read_events_after(lock: SimulatedLock) -> None:
    for _ in range(5):
        lock.tamper()
    assert [e.id for e in lock.read_events(2, 2)] == [3, 4]
    assert lock.read_events(0, 0) == []


def test_battery(lock: SimulatedLock) -> None:
    lock.set_battery(50)
    assert lock.read_events(0, 10) == []
    lock.set_battery(15)
    assert lock.info().battery == 15
    assert lock.read_events(0, 10)[0].kind == EventKind.LOW_BATTERY


def test_tamper_and_door(lock: SimulatedLock) -> None:
    lock.tamper()
    lock.door_left_open()
    kinds = [e.kind for e in lock.read_events(0, 10)]
    assert kinds == [EventKind.TAMPER, EventKind.DOOR_LEFT_OPEN]


def test_no_secret_in_repr(lock: SimulatedLock) -> None:
    lock.set_credential(pin(0, "98765432"))
    assert "98765432" not in repr(lock)
    assert "98765432" not in repr(lock._slots)
    assert "98765432" not in repr(pin(0, "98765432"))


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        SimulatedLock(slots=0)
    with pytest.raises(ValueError):
        SimulatedLock(pin_min=8, pin_max=4)
    with pytest.raises(ValueError):
        SimulatedLock(event_capacity=10)
