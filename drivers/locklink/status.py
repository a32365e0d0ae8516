"""LockLink status codes (spec section 4) and their translation to driver errors."""

from __future__ import annotations

from enum import IntEnum

from drivers.base import (
    CodeNotSupportedError,
    CredentialTypeNotSupportedError,
    DriverError,
    DuplicateCodeError,
    LockAuthFailedError,
    LockFaultError,
    LockFullError,
    LockOfflineError,
)


class Status(IntEnum):
    """First byte of every LockLink response body."""

    OK = 0x00
    BAD_REQUEST = 0x01
    UNKNOWN_OP = 0x02
    BAD_SLOT = 0x03
    DUPLICATE = 0x04
    FULL = 0x05
    AUTH_REQUIRED = 0x06
    UNSUPPORTED = 0x07
    INVALID_CODE = 0x08
    BUSY = 0x09
    INTERNAL = 0x7F


_ERRORS: dict[int, type[DriverError]] = {
    Status.DUPLICATE: DuplicateCodeError,
    Status.FULL: LockFullError,
    Status.INVALID_CODE: CodeNotSupportedError,
    Status.UNSUPPORTED: CredentialTypeNotSupportedError,
    Status.AUTH_REQUIRED: LockAuthFailedError,
    Status.BUSY: LockOfflineError,  # transient: retried like a missed answer
}


def check_status(status: int, *, op: str, lock_id: str | None = None) -> None:
    """Raise the driver error for a non-OK status; return for OK."""
    if status == Status.OK:
        return
    try:
        name = Status(status).name
    except ValueError:
        name = f"0x{status:02x}"
    cls = _ERRORS.get(status, LockFaultError)
    raise cls(f"{op} answered {name}", lock_id=lock_id)
