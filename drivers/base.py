"""The lock driver interface: what every lock transport offers the reconciler."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag, StrEnum

SLOT_NONE = 0xFFFF  # event slot value when no credential is involved
REF_LEN = 16
U32_MAX = 0xFFFFFFFF


class Reason(StrEnum):
    """Failure reasons of the MQTT contract (door `reason` for provisioning/failed)."""

    LOCK_OFFLINE = "lock_offline"
    LOCK_FULL = "lock_full"
    DUPLICATE_CODE = "duplicate_code"
    CODE_NOT_SUPPORTED = "code_not_supported"
    CREDENTIAL_TYPE_NOT_SUPPORTED = "credential_type_not_supported"
    LOCK_AUTH_FAILED = "lock_auth_failed"
    LOCK_ERROR = "lock_error"
    UNKNOWN_DOOR = "unknown_door"


class DriverError(Exception):
    """A lock operation failed; `reason` is the contract's code, `retryable` says if trying again may help."""

    reason: Reason = Reason.LOCK_ERROR
    retryable: bool = True

    def __init__(self, message: str = "", *, lock_id: str | None = None) -> None:
        super().__init__(message or self.reason.value)
        self.lock_id = lock_id


class LockOfflineError(DriverError):
    """The lock did not answer (timeout, link lost, port gone)."""

    reason = Reason.LOCK_OFFLINE


class LockFullError(DriverError):
    """The lock has no storage left."""

    reason = Reason.LOCK_FULL
    retryable = False


class DuplicateCodeError(DriverError):
    """The PIN is already held by another slot of the lock."""

    reason = Reason.DUPLICATE_CODE
    retryable = False


class CodeNotSupportedError(DriverError):
    """The PIN violates the lock's rules (length, digits)."""

    reason = Reason.CODE_NOT_SUPPORTED
    retryable = False


class CredentialTypeNotSupportedError(DriverError):
    """The lock does not support this credential type."""

    reason = Reason.CREDENTIAL_TYPE_NOT_SUPPORTED
    retryable = False


class LockAuthFailedError(DriverError):
    """The lock failed to prove it holds the lock key (or we hold the wrong one)."""

    reason = Reason.LOCK_AUTH_FAILED
    retryable = False


class LockFaultError(DriverError):
    """The lock reported a fault or answered something unexpected."""

    reason = Reason.LOCK_ERROR


class CredentialType(IntEnum):
    """LockLink credential type codes."""

    PIN = 1
    SMARTKEY = 2


class Caps(IntFlag):
    """LockLink capability bits."""

    SCHEDULE = 1 << 0
    PIN = 1 << 1
    SMARTKEY = 1 << 2
    EVENTS = 1 << 3


class EventKind(IntEnum):
    """LockLink audit event kinds."""

    GRANTED = 1
    DENIED = 2
    TAMPER = 3
    LOW_BATTERY = 4
    DOOR_LEFT_OPEN = 5
    CLOCK_LOST = 6


def secret_digest(secret: bytes) -> bytes:
    """SHA-256(secret)[0:8], the digest a lock reports for a slot."""
    return hashlib.sha256(secret).digest()[:8]


@dataclass(frozen=True)
class LockInfo:
    """What GET_INFO reports."""

    model: str
    firmware: str
    serial: str
    caps: Caps
    slots: int
    pin_min: int
    pin_max: int
    battery: int
    clock: int


@dataclass(frozen=True)
class SlotWrite:
    """A credential to put into one slot. `secret` never appears in repr."""

    slot: int
    type: CredentialType
    ref: bytes
    valid_from: int
    valid_until: int
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class SlotContent:
    """What GET_CREDENTIAL reports for one slot."""

    slot: int
    occupied: bool
    type: int = 0
    ref: bytes = b"\0" * REF_LEN
    valid_from: int = 0
    valid_until: int = 0
    # SHA-256(secret)[0:8]: a short PIN is recoverable from it, so it stays out of repr/logs.
    digest: bytes = field(default=b"\0" * 8, repr=False)

    def matches(self, write: SlotWrite) -> bool:
        """True when this slot holds exactly `write` (ref, type, window and secret digest)."""
        return (
            self.occupied
            and self.type == int(write.type)
            and self.ref == write.ref
            and self.valid_from == write.valid_from
            and self.valid_until == write.valid_until
            and self.digest == secret_digest(write.secret)
        )


@dataclass(frozen=True)
class LockEvent:
    """One audit event from the lock's log."""

    id: int
    time: int
    kind: EventKind | int
    slot: int
    ref: bytes


class LockDriver(ABC):
    """One lock, reached through some transport. Methods raise DriverError subclasses only.

    Callers never run two operations on one driver at once (the reconciler's per-lock
    worker serialises them); a driver sharing a bus with others serialises the bus itself.
    """

    transport: str = "memory"
    # The most events one read_events call can return: fewer means the lock has no more.
    max_events_per_read: int = 255

    def __init__(self, lock_id: str) -> None:
        self.lock_id = lock_id

    @abstractmethod
    async def get_info(self) -> LockInfo:
        """Read model, capabilities, slot count, PIN rules, battery and clock."""

    @abstractmethod
    async def set_time(self, epoch: int) -> None:
        """Set the lock clock (UTC seconds)."""

    @abstractmethod
    async def set_credential(self, write: SlotWrite) -> None:
        """Write (or replace) one slot."""

    @abstractmethod
    async def clear_credential(self, slot: int) -> None:
        """Empty one slot (succeeds on an empty slot)."""

    @abstractmethod
    async def get_credential(self, slot: int) -> SlotContent:
        """Read one slot back."""

    @abstractmethod
    async def list_slots(self) -> tuple[int, frozenset[int]]:
        """Return (slot count, occupied slot numbers)."""

    @abstractmethod
    async def read_events(self, after: int, max_count: int = 32) -> list[LockEvent]:
        """Return up to `max_count` oldest events with id > `after`."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the transport (connection, port)."""
