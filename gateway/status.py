"""Door and key status bookkeeping: rows in the store, payloads and events into the outbox."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.rules import TERMINAL_ABSENT, DoorState
from gateway.store import DoorRow, Store
from gateway.topics import Topics

PENDING_MESSAGE = (
    "The credentials haven't been assigned to the door yet. This can occur if provisioning was "
    "manually disabled or if, based on your configuration settings, the linked PMS reservation "
    "hasn't been checked in (either at the front desk or online)."
)

_FAILED_MESSAGES = {
    "lock_offline": "The lock did not answer.",
    "lock_full": "The lock has no free credential slot.",
    "duplicate_code": "Another credential on this lock already uses this door code.",
    "code_not_supported": "The door code does not meet the lock's rules (length or digits).",
    "credential_type_not_supported": "The lock does not support this credential type.",
    "lock_auth_failed": "The lock failed authentication; check its lock key.",
    "lock_error": "The lock reported an error.",
    "unknown_door": "No lock of this gateway serves this door.",
}


def rfc3339(dt: datetime) -> str:
    """UTC timestamp as RFC 3339 with a Z suffix, second precision plus milliseconds."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes for MQTT."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def door_message(state: str, reason: str | None) -> str | None:
    """The human text shown beside a door state (the portal's tooltip for pending doors)."""
    if state == DoorState.PENDING:
        return PENDING_MESSAGE
    if state in (DoorState.FAILED, DoorState.PROVISIONING, DoorState.REVOKING) and reason:
        return _FAILED_MESSAGES.get(reason)
    return None


class StatusBook:
    """Writes door status changes to the store and queues key status and events for MQTT."""

    def __init__(self, store: Store, topics: Topics, gateway_id: str, now: Callable[[], datetime]):
        self.store = store
        self.topics = topics
        self.gateway_id = gateway_id
        self.now = now

    def set_door(
        self,
        key_id: str,
        door_id: str,
        key_version: int,
        state: str,
        reason: str | None,
        creds: dict[str, str],
        attempts: int | None = None,
    ) -> bool:
        """Record a door's status; on any change queue the key status and a door_status event."""
        old = self.store.door(key_id, door_id)
        if attempts is None:
            attempts = old.attempts if old is not None and old.key_version == key_version else 0
        if (
            old is not None
            and (old.key_version, old.state, old.reason, old.creds, old.attempts)
            == (key_version, state, reason, creds, attempts)
        ):
            return False
        at = rfc3339(self.now())
        row = DoorRow(key_id, door_id, key_version, state, reason, creds, attempts, at)
        with self.store.transaction():
            self.store.put_door(row)
            if old is None or old.state != state or old.reason != reason:
                self.store.enqueue(
                    self.topics.events,
                    dumps({
                        "type": "door_status", "key_id": key_id, "door_id": door_id,
                        "from": None if old is None else old.state, "to": state,
                        "reason": reason, "at": at,
                    }),
                )
            self.publish_key(key_id)
        return True

    def key_payload(self, key_id: str, rows: list[DoorRow]) -> dict[str, Any]:
        """The retained key status object of the contract."""
        doors = {
            r.door_id: {
                "state": r.state,
                "reason": r.reason,
                "message": door_message(r.state, r.reason),
                "credentials": r.creds,
                "attempts": r.attempts,
                "updated_at": r.updated_at,
            }
            for r in rows
        }
        version = max((r.key_version for r in rows), default=0)
        updated = max((r.updated_at for r in rows), default=rfc3339(self.now()))
        return {
            "key_id": key_id, "key_version": version, "gateway_id": self.gateway_id,
            "doors": doors, "updated_at": updated,
        }

    def publish_key(self, key_id: str) -> None:
        """Queue the key's status; once every door is revoked or expired, clear the retained topic."""
        rows = self.store.doors_of_key(key_id)
        topic = self.topics.key(key_id)
        if not rows:
            return
        with self.store.transaction():
            self.store.enqueue(topic, dumps(self.key_payload(key_id, rows)), retain=True)
            if all(r.state in TERMINAL_ABSENT for r in rows):
                self.store.enqueue(topic, b"", retain=True)
