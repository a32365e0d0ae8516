"""Provisioning rules of the contract: (key, reservation, policy, now) -> what one door must hold. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class DoorState(StrEnum):
    """Door `state` values of the key status payload."""

    PENDING = "pending_provisioning"
    PROVISIONING = "provisioning"
    PROVISIONED = "provisioned"
    FAILED = "failed"
    REVOKING = "revoking"
    REVOKED = "revoked"
    EXPIRED = "expired"


TERMINAL_ABSENT = frozenset({DoorState.REVOKED, DoorState.EXPIRED})


class PendingReason(StrEnum):
    """Reasons a door is pending provisioning."""

    DISABLED = "provisioning_disabled"
    NOT_CHECKED_IN = "reservation_not_checked_in"


@dataclass(frozen=True)
class KeyFacts:
    """The parts of a key that the rules look at (no secrets)."""

    key_id: str
    revoked: bool
    doors: frozenset[str]
    valid_from: datetime | None
    valid_until: datetime | None
    allow_provisioning: bool
    reservation_id: str | None


@dataclass(frozen=True)
class Policy:
    """The property configuration (defaults apply until a policy.update arrives)."""

    version: int = 0
    require_checkin_before_provisioning: bool = False
    revoke_on_checkout: bool = True


@dataclass(frozen=True)
class Intent:
    """What one door of one key must hold: credentials present or absent, and the resting state."""

    present: bool
    state: DoorState  # the state once the lock matches: PROVISIONED, PENDING, REVOKED or EXPIRED
    reason: str | None = None


def door_intent(
    key: KeyFacts, door_id: str, reservation_status: str | None, policy: Policy, now: datetime
) -> Intent:
    """Apply the contract's rules, in the contract's order, for one door of one key."""
    if key.revoked or door_id not in key.doors:
        # A door dropped from the keychain loses its credentials like a revoke.
        return Intent(False, DoorState.REVOKED)
    if key.valid_until is not None and now >= key.valid_until:
        return Intent(False, DoorState.EXPIRED)
    if (
        key.reservation_id is not None
        and reservation_status in ("checked_out", "cancelled")
        and policy.revoke_on_checkout
    ):
        return Intent(False, DoorState.REVOKED)
    if not key.allow_provisioning:
        return Intent(False, DoorState.PENDING, PendingReason.DISABLED)
    if (
        policy.require_checkin_before_provisioning
        and key.reservation_id is not None
        and reservation_status != "checked_in"
    ):
        return Intent(False, DoorState.PENDING, PendingReason.NOT_CHECKED_IN)
    return Intent(True, DoorState.PROVISIONED)


def write_due(key: KeyFacts, now: datetime, lock_enforces_schedule: bool) -> bool:
    """Whether a present credential should be on the lock now.

    A lock that enforces the window gets the credential at once; one that does not gets it
    only from `valid_from` (and loses it at `valid_until` through the expiry rule).
    """
    if lock_enforces_schedule:
        return True
    return key.valid_from is None or now >= key.valid_from


def resting_state(intent: Intent, lock_matches: bool) -> tuple[DoorState, str | None]:
    """The door state to show now, given whether the lock already matches the intent."""
    if lock_matches:
        return intent.state, intent.reason
    if intent.present:
        return DoorState.PROVISIONING, None
    return DoorState.REVOKING, None
