"""The simulated lock's brain: slots, PIN rules, schedule, clock and events (no I/O)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.base import (
    REF_LEN,
    SLOT_NONE,
    U32_MAX,
    Caps,
    CredentialType,
    EventKind,
    LockEvent,
    LockInfo,
    SlotContent,
    SlotWrite,
    secret_digest,
)
from drivers.locklink.status import Status

DEFAULT_CAPS = Caps.SCHEDULE | Caps.PIN | Caps.SMARTKEY | Caps.EVENTS
SMARTKEY_LEN = 32  # Ed25519 public key
LOW_BATTERY_PCT = 20
MIN_EVENT_LOG = 256  # spec 3: a lock keeps at least the last 256 events
ZERO_REF = b"\0" * REF_LEN
_TYPE_CAP = {CredentialType.PIN: Caps.PIN, CredentialType.SMARTKEY: Caps.SMARTKEY}


@dataclass
class Faults:
    """Injected misbehaviour; transport faults are applied by the serving layers, the rest here."""

    latency_s: float = 0.0  # extra delay before each response
    drop_rate: float = 0.0  # fraction of responses never sent
    corrupt_rate: float = 0.0  # fraction of responses with one flipped byte
    ignore_clear: bool = False  # CLEAR_CREDENTIAL answers OK but keeps the slot
    full: bool = False  # SET_CREDENTIAL answers FULL
    wrong_key: bool = False  # the lock proves itself with a wrong key (HELLO proof fails)


@dataclass
class _Slot:
    """One occupied slot; the secret never appears in repr."""

    type: CredentialType
    ref: bytes
    valid_from: int
    valid_until: int
    secret: bytes = field(repr=False)


class SimulatedLock:
    """A LockLink lock's state and decisions, answering with the status codes a real lock would."""

    def __init__(
        self,
        *,
        serial: str = "SIM00001",
        model: str = "LL-SIM",
        firmware: str = "1.0.0",
        slots: int = 32,
        pin_min: int = 4,
        pin_max: int = 8,
        caps: Caps = DEFAULT_CAPS,
        battery: int = 100,
        clock: Callable[[], float] = time.time,
        skew_s: float = 0.0,
        event_capacity: int = 512,
        faults: Faults | None = None,
    ) -> None:
        if not 1 <= slots <= 0xFFFF:
            raise ValueError("slots must be 1..65535")
        if not 1 <= pin_min <= pin_max <= 255:
            raise ValueError("need 1 <= pin_min <= pin_max <= 255")
        for what, text, n in (
            ("serial", serial, 16),
            ("model", model, 16),
            ("firmware", firmware, 8),
        ):
            if not (text.isascii() and len(text) <= n and "\0" not in text):
                raise ValueError(f"{what} must be at most {n} ASCII characters (GET_INFO layout)")
        if not 0 <= battery <= 100:
            raise ValueError("battery must be 0..100")
        if event_capacity < MIN_EVENT_LOG:
            raise ValueError(f"event_capacity must be >= {MIN_EVENT_LOG}")
        self.serial = serial
        self.model = model
        self.firmware = firmware
        self.slots = slots
        self.pin_min = pin_min
        self.pin_max = pin_max
        self.caps = Caps(caps)
        self.battery = battery
        self.clock = clock
        self.skew_s = skew_s
        self.faults = faults if faults is not None else Faults()
        self.reboots = 0
        self._slots: dict[int, _Slot] = {}
        self._events: deque[LockEvent] = deque(maxlen=event_capacity)
        self._next_event_id = 1

    def __repr__(self) -> str:
        return (
            f"SimulatedLock(serial={self.serial!r}, slots={self.slots}, "
            f"occupied={len(self._slots)}, caps={self.caps!r})"
        )

    # -- clock -------------------------------------------------------------------------

    def now(self) -> int:
        """Lock time in UTC seconds: clock() + skew, clamped to u32."""
        return max(0, min(U32_MAX, int(self.clock() + self.skew_s)))

    def set_time(self, t: int) -> Status:
        """Set the lock clock (SET_TIME)."""
        if not 0 <= t <= U32_MAX:
            return Status.BAD_REQUEST
        self.skew_s = t - self.clock()
        return Status.OK

    def reboot(self) -> None:
        """Restart: the RTC starts again from 0 and a CLOCK_LOST event is logged; slots survive."""
        self.reboots += 1
        self.skew_s = -self.clock()
        self.log_event(EventKind.CLOCK_LOST)

    # -- GET_INFO ----------------------------------------------------------------------

    def info(self) -> LockInfo:
        """What GET_INFO reports."""
        return LockInfo(
            model=self.model,
            firmware=self.firmware,
            serial=self.serial,
            caps=self.caps,
            slots=self.slots,
            pin_min=self.pin_min,
            pin_max=self.pin_max,
            battery=self.battery,
            clock=self.now(),
        )

    # -- credentials -------------------------------------------------------------------

    def set_credential(self, w: SlotWrite) -> Status:
        """Write (or replace) one slot, checking the lock's rules (SET_CREDENTIAL)."""
        if not 0 <= w.slot < self.slots:
            return Status.BAD_SLOT
        if len(w.ref) != REF_LEN or not (
            0 <= w.valid_from <= U32_MAX and 0 <= w.valid_until <= U32_MAX
        ):
            return Status.BAD_REQUEST
        try:
            ctype = CredentialType(w.type)
        except ValueError:
            return Status.UNSUPPORTED
        if not self.caps & _TYPE_CAP[ctype]:
            return Status.UNSUPPORTED
        if ctype is CredentialType.PIN:
            if not self._pin_ok(w.secret):
                return Status.INVALID_CODE
            if any(
                s.type is CredentialType.PIN and s.secret == w.secret
                for n, s in self._slots.items()
                if n != w.slot
            ):
                return Status.DUPLICATE
        elif len(w.secret) != SMARTKEY_LEN:
            return Status.BAD_REQUEST
        if self.faults.full:
            return Status.FULL
        self._slots[w.slot] = _Slot(
            ctype, bytes(w.ref), w.valid_from, w.valid_until, bytes(w.secret)
        )
        return Status.OK

    def _pin_ok(self, secret: bytes) -> bool:
        """True when `secret` is pin_min..pin_max ASCII digits."""
        return self.pin_min <= len(secret) <= self.pin_max and all(
            0x30 <= b <= 0x39 for b in secret
        )

    def clear_credential(self, slot: int) -> Status:
        """Empty one slot; OK on an empty slot (CLEAR_CREDENTIAL). Fault `ignore_clear` keeps it."""
        if not 0 <= slot < self.slots:
            return Status.BAD_SLOT
        if not self.faults.ignore_clear:
            self._slots.pop(slot, None)
        return Status.OK

    def get_credential(self, slot: int) -> tuple[Status, SlotContent | None]:
        """Read one slot back with the secret's digest (GET_CREDENTIAL)."""
        if not 0 <= slot < self.slots:
            return Status.BAD_SLOT, None
        s = self._slots.get(slot)
        if s is None:
            return Status.OK, SlotContent(slot=slot, occupied=False)
        return Status.OK, SlotContent(
            slot=slot,
            occupied=True,
            type=int(s.type),
            ref=s.ref,
            valid_from=s.valid_from,
            valid_until=s.valid_until,
            digest=secret_digest(s.secret),
        )

    def list_slots(self) -> tuple[int, frozenset[int]]:
        """Return (slot count, occupied slot numbers) (LIST_SLOTS)."""
        return self.slots, frozenset(self._slots)

    def wipe(self) -> None:
        """Empty every slot (factory reset of the credential store, for tests)."""
        self._slots.clear()

    # -- events ------------------------------------------------------------------------

    def log_event(self, kind: EventKind, slot: int = SLOT_NONE, ref: bytes = ZERO_REF) -> LockEvent:
        """Append one event to the bounded log and return it."""
        ev = LockEvent(id=self._next_event_id, time=self.now(), kind=kind, slot=slot, ref=ref)
        self._next_event_id += 1
        self._events.append(ev)
        return ev

    def read_events(self, after: int, max_count: int) -> list[LockEvent]:
        """Return up to `max_count` oldest events with id > `after` (READ_EVENTS)."""
        out: list[LockEvent] = []
        for ev in self._events:
            if len(out) >= max_count:
                break
            if ev.id > after:
                out.append(ev)
        return out

    @property
    def last_event_id(self) -> int:
        """Id of the newest event (0 when none was ever logged)."""
        return self._next_event_id - 1

    # -- the physical side -------------------------------------------------------------

    def press_pin(self, code: str) -> bool:
        """Someone types `code` on the keypad; True when the lock opens."""
        return self._present(CredentialType.PIN, code.encode("ascii", "replace"))

    def present_smartkey(self, public_key: bytes) -> bool:
        """A phone proves it holds `public_key`; True when the lock opens."""
        return self._present(CredentialType.SMARTKEY, bytes(public_key))

    def _present(self, ctype: CredentialType, secret: bytes) -> bool:
        """Grant when an occupied slot holds `secret` within its window; log the decision."""
        now = self.now()
        for n in sorted(self._slots):
            s = self._slots[n]
            if s.type is not ctype or s.secret != secret:
                continue
            if self.caps & Caps.SCHEDULE and not s.valid_from <= now < s.valid_until:
                continue
            self.log_event(EventKind.GRANTED, n, s.ref)
            return True
        self.log_event(EventKind.DENIED)
        return False

    def tamper(self) -> None:
        """Someone forces the lock: logs TAMPER."""
        self.log_event(EventKind.TAMPER)

    def door_left_open(self) -> None:
        """The door stays open too long: logs DOOR_LEFT_OPEN."""
        self.log_event(EventKind.DOOR_LEFT_OPEN)

    def set_battery(self, pct: int) -> None:
        """Set the battery level; logs LOW_BATTERY when set under 20%."""
        self.battery = max(0, min(100, pct))
        if self.battery < LOW_BATTERY_PCT:
            self.log_event(EventKind.LOW_BATTERY)
