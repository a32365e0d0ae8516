"""Jobs change desired state: validate, apply by the version rule, evaluate doors, ack, in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from drivers.base import U32_MAX
from gateway.contract import (
    AckResult,
    Job,
    JobType,
    KeyRevoke,
    KeyUpsert,
    PolicyUpdate,
    RejectCode,
    Rejection,
    ReservationUpsert,
    SiteSync,
    ack_payload,
    parse_job,
)
from gateway.jws import JobVerifier
from gateway.rules import DoorState, Intent, KeyFacts, Policy, door_intent, resting_state
from gateway.secretbox import SecretBox
from gateway.status import StatusBook, dumps, rfc3339
from gateway.store import KeyRecord, SlotRow, Store

log = logging.getLogger("lockgw.engine")

MAINTENANCE = (JobType.LOCK_RECONCILE, JobType.LOCK_SYNC_TIME, JobType.GATEWAY_REPUBLISH)


def window(facts: KeyFacts) -> tuple[int, int]:
    """The key's validity window as LockLink u32 seconds (open ends become 0 and u32 max)."""
    vf = 0 if facts.valid_from is None else max(0, int(facts.valid_from.timestamp()))
    vu = U32_MAX if facts.valid_until is None else min(U32_MAX, int(facts.valid_until.timestamp()))
    return vf, vu


def key_record(body: KeyUpsert) -> KeyRecord:
    """The cache form of a key.upsert body."""
    secrets: dict[str, bytes] = {}
    for cred in body.credentials:
        secrets[cred.type] = cred.secret_bytes()
    facts = KeyFacts(
        body.key_id, False, frozenset(body.doors), body.valid_from, body.valid_until,
        body.allow_provisioning, body.reservation_id,
    )
    return KeyRecord(body.key_id, body.version, facts, body.label, secrets)


@dataclass
class Counters:
    """Job counters reported in health."""

    received: int = 0
    rejected: int = 0


@dataclass
class Outcome:
    """What handling one message produced for the rest of the daemon."""

    result: AckResult
    job: Job | None = None
    dirty: set[tuple[str, str]] = field(default_factory=set)  # (lock_id, key_id) needing lock I/O
    touched: set[str] = field(default_factory=set)  # key ids re-evaluated


class Engine:
    """The policy cache's writer: applies jobs and decides each local door's state."""

    def __init__(
        self,
        store: Store,
        book: StatusBook,
        doors: dict[str, str],
        *,
        gateway_id: str,
        max_payload: int,
        verifier: JobVerifier | None,
        max_age: timedelta,
        max_future: timedelta,
        now: Callable[[], datetime],
        box: SecretBox,
    ) -> None:
        self.store = store
        self.box = box
        self.book = book
        self.doors = doors  # door_id -> lock_id of the locks this gateway serves
        self.gateway_id = gateway_id
        self.max_payload = max_payload
        self.verifier = verifier
        self.max_age = max_age
        self.max_future = max_future
        self.now = now
        self.counters = Counters()

    # --- messages -------------------------------------------------------------------------
    def handle(self, payload: bytes) -> Outcome:
        """Validate and apply one job message; the ack is queued in the same transaction."""
        received = self.now()
        self.counters.received += 1
        try:
            job = parse_job(
                payload, max_bytes=self.max_payload, verifier=self.verifier, now=received,
                max_age=self.max_age, max_future=self.max_future,
            )
        except Rejection as rej:
            self.counters.rejected += 1
            log.warning("job rejected: %s: %s (job_id=%s)", rej.code, rej.message, rej.job_id)
            with self.store.transaction():
                self._ack(rej.job_id, "rejected", received, rej)
            return Outcome("rejected")
        out = Outcome("accepted", job)
        try:
            with self.store.transaction():
                if self.store.job_result(job.job_id) is not None:
                    out.result = "duplicate"
                else:
                    out.result = self._apply(job, out.touched)
                    self.store.record_job(job.job_id, job.type, rfc3339(received), out.result)
                self._ack(job.job_id, out.result, received)
                for key_id in sorted(out.touched):
                    out.dirty |= self.evaluate(key_id)
        except Exception:
            # A bug, not bad input: the transaction rolled back. Reject (without recording the
            # job id, so the portal may resend it) rather than leave a poison message that the
            # broker would redeliver forever.
            log.exception("job %s %s could not be applied", job.job_id, job.type)
            self.counters.rejected += 1
            internal = Rejection(RejectCode.MALFORMED, "internal error while applying the job; "
                                 "see the gateway log", job.job_id, job.payload_sha256)
            with self.store.transaction():
                self._ack(job.job_id, "rejected", received, internal)
            return Outcome("rejected", job)
        log.info("job %s %s: %s", job.job_id, job.type, out.result)
        return out

    def _ack(
        self, job_id: str | None, result: AckResult, received: datetime, rej: Rejection | None = None
    ) -> None:
        ack = ack_payload(job_id, self.gateway_id, result, received, rej)
        self.store.enqueue(self.book.topics.acks, dumps(ack))

    # --- the version rule -----------------------------------------------------------------
    def _apply(self, job: Job, touched: set[str]) -> AckResult:
        body = job.body
        if job.type in MAINTENANCE:
            return "accepted"
        if isinstance(body, KeyUpsert):
            return self._upsert_key(body, touched)
        if isinstance(body, KeyRevoke):
            return self._revoke_key(body.key_id, body.version, touched)
        if isinstance(body, ReservationUpsert):
            return self._upsert_reservation(body, touched)
        if isinstance(body, PolicyUpdate):
            return self._update_policy(body, touched)
        if isinstance(body, SiteSync):
            return self._sync(body, touched)
        raise AssertionError(f"unhandled job type {job.type}")  # parse_job admits no other

    def _upsert_key(self, body: KeyUpsert, touched: set[str]) -> AckResult:
        held = self.store.key_version(body.key_id)
        if held is not None and body.version <= held[0]:
            return "stale"
        self.store.put_key(key_record(body))
        touched.add(body.key_id)
        return "accepted"

    def _revoke_key(self, key_id: str, version: int, touched: set[str]) -> AckResult:
        held = self.store.key_version(key_id)
        if held is not None and version <= held[0]:
            return "stale"
        self.store.tombstone(key_id, version)
        touched.add(key_id)
        return "accepted"

    def _upsert_reservation(self, body: ReservationUpsert, touched: set[str]) -> AckResult:
        held = self.store.reservation(body.reservation_id)
        if held is not None and body.version <= held[0]:
            return "stale"
        self.store.put_reservation(body.reservation_id, body.version, body.status, body.channel)
        touched.update(self.store.keys_for_reservation(body.reservation_id))
        return "accepted"

    def _update_policy(self, body: PolicyUpdate, touched: set[str]) -> AckResult:
        if self.store.meta("policy_received") is not None and body.version <= self.store.policy().version:
            return "stale"
        self.store.put_policy(
            Policy(body.version, body.require_checkin_before_provisioning, body.revoke_on_checkout)
        )
        self.store.set_meta("policy_received", "1")
        # Both policy switches only concern reservation-linked keys.
        touched.update(self.store.keys_with_reservation())
        return "accepted"

    def _sync(self, body: SiteSync, touched: set[str]) -> AckResult:
        if body.policy is not None:
            self._update_policy(body.policy, touched)
        for res in body.reservations:
            self._upsert_reservation(res, touched)
        present = set()
        for key in body.keys:
            present.add(key.key_id)
            self._upsert_key(key, touched)
        for key_id in self.store.live_key_ids():
            if key_id not in present:
                held = self.store.key_version(key_id)
                assert held is not None
                # Same version: the portal's later upsert (higher version) may bring it back.
                self.store.tombstone(key_id, held[0])
                touched.add(key_id)
        self.store.set_meta("sync_revision", str(body.revision))
        return "accepted"

    # --- door evaluation ------------------------------------------------------------------
    def evaluate(
        self, key_id: str, only_door: str | None = None, attempts: int | None = None
    ) -> set[tuple[str, str]]:
        """Re-decide the local doors of a key; return the (lock_id, key_id) pairs needing lock I/O."""
        rec = self.store.get_key(key_id)
        if rec is None:
            return set()
        rows = {r.door_id: r for r in self.store.doors_of_key(key_id)}
        doors = set(rows) | {d for d in rec.facts.doors if d in self.doors}
        if only_door is not None:
            doors &= {only_door}
        now = self.now()
        dirty: set[tuple[str, str]] = set()
        for door_id in sorted(doors):
            lock_id = self.doors.get(door_id)
            if lock_id is None:
                continue  # a lock removed from the configuration; nothing to converge
            intent = self.intent(rec, door_id, now)
            matches = self.lock_matches(lock_id, rec, intent.present)
            state, reason = resting_state(intent, matches)
            old = rows.get(door_id)
            if old is None and state in (DoorState.REVOKED, DoorState.REVOKING) and not rec.creds:
                continue  # a tombstone for a key this door never had
            cred_names = rec.creds or sorted(old.creds if old else {})
            n = attempts
            if n is None and (old is None or old.state != state or old.key_version != rec.version):
                n = 0
            self.book.set_door(
                key_id, door_id, rec.version, state, reason, {c: str(state) for c in cred_names}, n
            )
            if state in (DoorState.PROVISIONING, DoorState.REVOKING):
                dirty.add((lock_id, key_id))
        return dirty

    def intent(self, rec: KeyRecord, door_id: str, now: datetime) -> Intent:
        """The rules applied to one door of a cached key, with its reservation and the policy."""
        rid = rec.facts.reservation_id
        res = self.store.reservation(rid) if rid else None
        return door_intent(rec.facts, door_id, res[1] if res else None, self.store.policy(), now)

    def slot_holds(self, row: SlotRow | None, secret: bytes, span: tuple[int, int]) -> bool:
        """Whether a slot was confirmed holding exactly this secret with this window."""
        return (
            row is not None
            and row.confirmed
            and row.digest == self.box.fingerprint(secret)
            and (row.valid_from, row.valid_until) == span
        )

    def lock_matches(self, lock_id: str, rec: KeyRecord, present: bool) -> bool:
        """Whether the slots confirmed on the lock already equal what the key wants there."""
        slots = self.store.slots_of(lock_id, rec.key_id)
        if not present:
            return not slots
        secrets = rec.secrets or {}
        span = window(rec.facts)
        return set(slots) == set(secrets) and all(
            self.slot_holds(row, secrets[cred], span) for cred, row in slots.items()
        )

    def evaluate_all(self, key_ids: Iterable[str]) -> set[tuple[str, str]]:
        """Evaluate many keys in one transaction."""
        dirty: set[tuple[str, str]] = set()
        with self.store.transaction():
            for key_id in key_ids:
                dirty |= self.evaluate(key_id)
        return dirty
