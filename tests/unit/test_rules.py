"""rules.door_intent over the contract's order, write_due and resting_state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.rules import DoorState, KeyFacts, Policy, door_intent, resting_state, write_due

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
PAST, FUTURE = NOW - timedelta(hours=1), NOW + timedelta(hours=1)


def key(*, revoked: bool = False, doors: tuple[str, ...] = ("101",), until: datetime | None = FUTURE,
        allow: bool = True, res: str | None = "R-1", since: datetime | None = PAST) -> KeyFacts:
    return KeyFacts("k", revoked, frozenset(doors), since, until, allow, res)


STRICT = Policy(1, True, True)
LAX = Policy(1, False, False)
P, REVOKED, EXPIRED, PENDING = DoorState.PROVISIONED, DoorState.REVOKED, DoorState.EXPIRED, DoorState.PENDING

# Each row breaks one rule and every later one: the earliest rule must win.
TABLE = [
    ("1 revoked beats everything", key(revoked=True, until=PAST, allow=False), "checked_out", STRICT,
     (False, REVOKED, None)),
    ("1 door dropped from keychain", key(doors=("pool",)), "checked_in", STRICT, (False, REVOKED, None)),
    ("2 expired beats checkout", key(until=PAST, allow=False), "checked_out", STRICT, (False, EXPIRED, None)),
    ("2 expiry is inclusive", key(until=NOW), "checked_in", STRICT, (False, EXPIRED, None)),
    ("3 checked out", key(allow=False), "checked_out", STRICT, (False, REVOKED, None)),
    ("3 cancelled", key(), "cancelled", STRICT, (False, REVOKED, None)),
    ("3 checkout kept without revoke_on_checkout", key(), "checked_out", LAX, (True, P, None)),
    ("3 staff key ignores reservations", key(res=None), "checked_out", STRICT, (True, P, None)),
    ("4 disabled beats check-in", key(allow=False), "booked", STRICT,
     (False, PENDING, "provisioning_disabled")),
    ("5 not checked in", key(), "booked", STRICT, (False, PENDING, "reservation_not_checked_in")),
    ("5 unknown reservation", key(), None, STRICT, (False, PENDING, "reservation_not_checked_in")),
    ("5 check-in not required", key(), "booked", Policy(1, False, True), (True, P, None)),
    ("6 checked in", key(), "checked_in", STRICT, (True, P, None)),
    ("6 open window", key(until=None, since=None, res=None), None, Policy(), (True, P, None)),
    ("6 not yet valid is still written (lock enforces)", key(since=FUTURE), "checked_in", STRICT,
     (True, P, None)),
]


@pytest.mark.parametrize(("case", "facts", "status", "policy", "want"), TABLE, ids=[t[0] for t in TABLE])
def test_door_intent(case: str, facts: KeyFacts, status: str | None, policy: Policy,
                     want: tuple[bool, DoorState, str | None]) -> None:
    got = door_intent(facts, "101", status, policy, NOW)
    assert (got.present, got.state, got.reason) == want


def test_defaults_until_a_policy_arrives() -> None:
    assert Policy() == Policy(0, False, True)


def test_write_due() -> None:
    assert write_due(key(since=FUTURE), NOW, True)
    assert not write_due(key(since=FUTURE), NOW, False)
    assert write_due(key(since=NOW), NOW, False) and write_due(key(since=None), NOW, False)


def test_resting_state() -> None:
    present = door_intent(key(), "101", "checked_in", STRICT, NOW)
    absent = door_intent(key(revoked=True), "101", None, STRICT, NOW)
    pending = door_intent(key(allow=False), "101", None, STRICT, NOW)
    assert resting_state(present, True) == (P, None)
    assert resting_state(present, False) == (DoorState.PROVISIONING, None)
    assert resting_state(absent, False) == (DoorState.REVOKING, None)
    assert resting_state(pending, False) == (DoorState.REVOKING, None)  # held credentials leave first
    assert resting_state(pending, True) == (PENDING, "provisioning_disabled")
