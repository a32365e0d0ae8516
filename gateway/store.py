"""The policy cache, slot map and outbox in SQLite: the only module that speaks SQL."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.rules import KeyFacts, Policy
from gateway.secretbox import SecretBox


class StoreError(Exception):
    """The database cannot be opened or migrated."""


# Each entry migrates from user_version == index to index + 1.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE jobs(job_id TEXT PRIMARY KEY, type TEXT NOT NULL, received_at TEXT NOT NULL,
                      result TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE keys(key_id TEXT PRIMARY KEY, version INTEGER NOT NULL,
                      revoked INTEGER NOT NULL DEFAULT 0, reservation_id TEXT,
                      valid_from INTEGER, valid_until INTEGER, blob BLOB) WITHOUT ROWID;
    CREATE INDEX keys_reservation ON keys(reservation_id) WHERE reservation_id IS NOT NULL;
    CREATE TABLE key_doors(door_id TEXT NOT NULL, key_id TEXT NOT NULL,
                           PRIMARY KEY(door_id, key_id)) WITHOUT ROWID;
    CREATE TABLE reservations(reservation_id TEXT PRIMARY KEY, version INTEGER NOT NULL,
                              status TEXT NOT NULL, channel TEXT) WITHOUT ROWID;
    CREATE TABLE policy(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL,
                        require_checkin INTEGER NOT NULL, revoke_on_checkout INTEGER NOT NULL);
    CREATE TABLE door_status(key_id TEXT NOT NULL, door_id TEXT NOT NULL, key_version INTEGER,
                             state TEXT NOT NULL, reason TEXT, creds TEXT NOT NULL,
                             attempts INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL,
                             PRIMARY KEY(key_id, door_id)) WITHOUT ROWID;
    CREATE INDEX door_status_state ON door_status(state);
    CREATE TABLE slots(lock_id TEXT NOT NULL, slot INTEGER NOT NULL, key_id TEXT NOT NULL,
                       cred TEXT NOT NULL, ref BLOB NOT NULL, confirmed INTEGER NOT NULL,
                       type INTEGER NOT NULL, digest BLOB, valid_from INTEGER, valid_until INTEGER,
                       PRIMARY KEY(lock_id, slot), UNIQUE(lock_id, key_id, cred)) WITHOUT ROWID;
    CREATE TABLE refs(ref BLOB PRIMARY KEY, key_id TEXT NOT NULL, cred TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
                        payload BLOB NOT NULL, retain INTEGER NOT NULL);
    CREATE TABLE retained(topic TEXT PRIMARY KEY, payload BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE locks(lock_id TEXT PRIMARY KEY, last_event_id INTEGER NOT NULL DEFAULT 0)
                       WITHOUT ROWID;
    CREATE TABLE meta(k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


def _ts(dt: datetime | None) -> int | None:
    return None if dt is None else int(dt.timestamp())


def _dt(ts: int | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass(frozen=True)
class KeyRecord:
    """A cached key: facts for the rules plus its credential secrets (decrypted, never logged)."""

    key_id: str
    version: int
    facts: KeyFacts
    label: str | None = None
    secrets: dict[str, bytes] | None = None  # cred ("door_code"/"smartkey") -> secret bytes

    def __repr__(self) -> str:
        return f"KeyRecord(key_id={self.key_id!r}, version={self.version}, creds={self.creds})"

    @property
    def creds(self) -> list[str]:
        """Credential kinds this key carries."""
        return sorted(self.secrets or {})


@dataclass(frozen=True)
class DoorRow:
    """Last reported status of one door of one key."""

    key_id: str
    door_id: str
    key_version: int
    state: str
    reason: str | None
    creds: dict[str, str]
    attempts: int
    updated_at: str


@dataclass(frozen=True)
class SlotRow:
    """One lock slot this gateway allocated, and what it last confirmed there."""

    lock_id: str
    slot: int
    key_id: str
    cred: str
    ref: bytes
    confirmed: bool
    type: int
    digest: bytes | None
    valid_from: int | None
    valid_until: int | None


class Store:
    """One SQLite connection in WAL mode with synchronous=FULL; callers group writes in transaction()."""

    def __init__(self, path: Path, box: SecretBox) -> None:
        self.path = path
        self._box = box
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open database: {exc}") from None
        self._depth = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        # Called on every enqueue, so whoever publishes the outbox wakes up. Safe before the
        # commit: the caller holds the event loop until its transaction ends.
        self.on_enqueue: Callable[[], None] = lambda: None

    def _migrate(self) -> None:
        current = self._db.execute("PRAGMA user_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {current} is newer than this gateway ({SCHEMA_VERSION})"
            )
        for version in range(current, SCHEMA_VERSION):
            with self.transaction():
                for stmt in _MIGRATIONS[version].split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                self._db.execute(f"PRAGMA user_version={version + 1}")

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT; nested use joins the outer transaction."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            self._depth = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
            raise
        self._db.execute("COMMIT")

    def _one(self, sql: str, *args: Any) -> Any:
        return self._db.execute(sql, args).fetchone()

    # --- jobs -----------------------------------------------------------------------------
    def job_result(self, job_id: str) -> str | None:
        """The result recorded for a job id, or None if never received."""
        row = self._one("SELECT result FROM jobs WHERE job_id=?", job_id)
        return None if row is None else str(row[0])

    def record_job(self, job_id: str, type_: str, received_at: str, result: str) -> None:
        """Remember a job id (idempotency and replay protection)."""
        self._db.execute(
            "INSERT OR IGNORE INTO jobs VALUES (?,?,?,?)", (job_id, type_, received_at, result)
        )

    def prune_jobs(self, before: str) -> int:
        """Forget job ids received before `before` (RFC 3339)."""
        return self._db.execute("DELETE FROM jobs WHERE received_at < ?", (before,)).rowcount

    # --- keys -----------------------------------------------------------------------------
    def key_version(self, key_id: str) -> tuple[int, bool] | None:
        """(version, revoked) of a cached key or tombstone."""
        row = self._one("SELECT version, revoked FROM keys WHERE key_id=?", key_id)
        return None if row is None else (int(row[0]), bool(row[1]))

    def put_key(self, rec: KeyRecord) -> None:
        """Insert or replace a live key, secrets sealed."""
        f = rec.facts
        doc = {
            "label": rec.label,
            "doors": sorted(f.doors),
            "allow": f.allow_provisioning,
            "secrets": {k: v.hex() for k, v in (rec.secrets or {}).items()},
        }
        blob = self._box.seal(json.dumps(doc).encode(), rec.key_id.encode())
        self._db.execute(
            "INSERT OR REPLACE INTO keys VALUES (?,?,0,?,?,?,?)",
            (rec.key_id, rec.version, f.reservation_id, _ts(f.valid_from), _ts(f.valid_until), blob),
        )
        self._db.execute("DELETE FROM key_doors WHERE key_id=?", (rec.key_id,))
        self._db.executemany(
            "INSERT INTO key_doors VALUES (?,?)", [(d, rec.key_id) for d in f.doors]
        )

    def tombstone(self, key_id: str, version: int) -> None:
        """Replace a key by a tombstone (id, version): an older upsert cannot revive it."""
        self._db.execute(
            "INSERT OR REPLACE INTO keys VALUES (?,?,1,NULL,NULL,NULL,NULL)", (key_id, version)
        )
        self._db.execute("DELETE FROM key_doors WHERE key_id=?", (key_id,))

    def get_key(self, key_id: str) -> KeyRecord | None:
        """Load one key with its decrypted secrets (tombstones come back with revoked facts)."""
        row = self._one(
            "SELECT version, revoked, reservation_id, valid_from, valid_until, blob "
            "FROM keys WHERE key_id=?",
            key_id,
        )
        if row is None:
            return None
        version, revoked, rid, vf, vu, blob = row
        if revoked:
            facts = KeyFacts(key_id, True, frozenset(), None, None, False, None)
            return KeyRecord(key_id, version, facts)
        doc = json.loads(self._box.open(blob, key_id.encode()))
        facts = KeyFacts(
            key_id, False, frozenset(doc["doors"]), _dt(vf), _dt(vu), bool(doc["allow"]), rid
        )
        secrets = {k: bytes.fromhex(v) for k, v in doc["secrets"].items()}
        return KeyRecord(key_id, version, facts, doc.get("label"), secrets)

    def live_key_ids(self) -> list[str]:
        """Ids of every key that is not a tombstone."""
        return [r[0] for r in self._db.execute("SELECT key_id FROM keys WHERE revoked=0")]

    def keys_for_reservation(self, reservation_id: str) -> list[str]:
        """Live keys linked to a reservation."""
        return [
            r[0]
            for r in self._db.execute(
                "SELECT key_id FROM keys WHERE reservation_id=? AND revoked=0", (reservation_id,)
            )
        ]

    def keys_with_reservation(self) -> list[str]:
        """Live keys linked to any reservation."""
        return [
            r[0]
            for r in self._db.execute(
                "SELECT key_id FROM keys WHERE reservation_id IS NOT NULL AND revoked=0"
            )
        ]

    def keys_for_door(self, door_id: str) -> list[str]:
        """Live keys whose keychain holds this door."""
        return [
            r[0] for r in self._db.execute("SELECT key_id FROM key_doors WHERE door_id=?", (door_id,))
        ]

    def key_window(self, key_id: str) -> tuple[int | None, int | None] | None:
        """(valid_from, valid_until) of a live key, without decrypting it; None for none."""
        row = self._one("SELECT valid_from, valid_until FROM keys WHERE key_id=? AND revoked=0", key_id)
        return None if row is None else (row[0], row[1])

    def key_deadlines(self) -> Iterator[tuple[str, int | None, int | None]]:
        """(key_id, valid_from, valid_until) of live keys with a window, to arm timers."""
        yield from self._db.execute(
            "SELECT key_id, valid_from, valid_until FROM keys WHERE revoked=0 "
            "AND (valid_from IS NOT NULL OR valid_until IS NOT NULL)"
        )

    # --- reservations and policy ----------------------------------------------------------
    def reservation(self, reservation_id: str) -> tuple[int, str] | None:
        """(version, status) of a cached reservation."""
        row = self._one(
            "SELECT version, status FROM reservations WHERE reservation_id=?", reservation_id
        )
        return None if row is None else (int(row[0]), str(row[1]))

    def put_reservation(self, rid: str, version: int, status: str, channel: str | None) -> None:
        """Insert or replace a reservation."""
        self._db.execute(
            "INSERT OR REPLACE INTO reservations VALUES (?,?,?,?)", (rid, version, status, channel)
        )

    def policy(self) -> Policy:
        """The cached property policy, or the contract's defaults."""
        row = self._one("SELECT version, require_checkin, revoke_on_checkout FROM policy")
        return Policy() if row is None else Policy(int(row[0]), bool(row[1]), bool(row[2]))

    def put_policy(self, p: Policy) -> None:
        """Replace the property policy."""
        self._db.execute(
            "INSERT OR REPLACE INTO policy VALUES (1,?,?,?)",
            (p.version, int(p.require_checkin_before_provisioning), int(p.revoke_on_checkout)),
        )

    # --- door status ----------------------------------------------------------------------
    def door(self, key_id: str, door_id: str) -> DoorRow | None:
        """The last status of one door of a key."""
        row = self._one("SELECT * FROM door_status WHERE key_id=? AND door_id=?", key_id, door_id)
        return None if row is None else _door_row(row)

    def doors_of_key(self, key_id: str) -> list[DoorRow]:
        """Every door status row of a key."""
        rows = self._db.execute(
            "SELECT * FROM door_status WHERE key_id=? ORDER BY door_id", (key_id,)
        )
        return [_door_row(r) for r in rows]

    def put_door(self, d: DoorRow) -> None:
        """Insert or replace a door status row."""
        self._db.execute(
            "INSERT OR REPLACE INTO door_status VALUES (?,?,?,?,?,?,?,?)",
            (d.key_id, d.door_id, d.key_version, d.state, d.reason, json.dumps(d.creds),
             d.attempts, d.updated_at),
        )

    def doors_in_states(self, states: tuple[str, ...]) -> list[tuple[str, str]]:
        """(key_id, door_id) of doors whose state is one of `states`."""
        q = ",".join("?" * len(states))
        return list(
            self._db.execute(f"SELECT key_id, door_id FROM door_status WHERE state IN ({q})", states)
        )

    def count_doors_in_states(self, states: tuple[str, ...]) -> int:
        """How many doors are in one of `states`."""
        q = ",".join("?" * len(states))
        return int(self._one(f"SELECT count(*) FROM door_status WHERE state IN ({q})", *states)[0])

    def doors_of_door_id(self, door_id: str) -> list[str]:
        """Key ids having a status row for this door."""
        return [
            r[0] for r in self._db.execute("SELECT key_id FROM door_status WHERE door_id=?", (door_id,))
        ]

    # --- slots ----------------------------------------------------------------------------
    def slots_of(self, lock_id: str, key_id: str) -> dict[str, SlotRow]:
        """cred -> slot row for one key on one lock."""
        rows = self._db.execute("SELECT * FROM slots WHERE lock_id=? AND key_id=?", (lock_id, key_id))
        return {r[3]: _slot_row(r) for r in rows}

    def lock_slots(self, lock_id: str) -> dict[int, SlotRow]:
        """slot number -> row for every slot this gateway allocated on a lock."""
        rows = self._db.execute("SELECT * FROM slots WHERE lock_id=?", (lock_id,))
        return {r[1]: _slot_row(r) for r in rows}

    def allocate_slot(
        self, lock_id: str, key_id: str, cred: str, ref: bytes, type_: int, total: int
    ) -> int | None:
        """Reserve the lowest free slot < total for (key, cred), unconfirmed; None when full."""
        used = {r[0] for r in self._db.execute("SELECT slot FROM slots WHERE lock_id=?", (lock_id,))}
        slot = next((i for i in range(total) if i not in used), None)
        if slot is None:
            return None
        self._db.execute(
            "INSERT INTO slots VALUES (?,?,?,?,?,0,?,NULL,NULL,NULL)",
            (lock_id, slot, key_id, cred, ref, type_),
        )
        self._db.execute("INSERT OR IGNORE INTO refs VALUES (?,?,?)", (ref, key_id, cred))
        return slot

    def mark_slot(
        self, lock_id: str, slot: int, *, confirmed: bool, digest: bytes | None = None,
        valid_from: int | None = None, valid_until: int | None = None,
    ) -> None:
        """Record what the lock was confirmed (or is about to be asked) to hold in a slot."""
        self._db.execute(
            "UPDATE slots SET confirmed=?, digest=?, valid_from=?, valid_until=? "
            "WHERE lock_id=? AND slot=?",
            (int(confirmed), digest, valid_from, valid_until, lock_id, slot),
        )

    def free_slot(self, lock_id: str, slot: int) -> None:
        """Forget a slot once the lock confirmed it empty."""
        self._db.execute("DELETE FROM slots WHERE lock_id=? AND slot=?", (lock_id, slot))

    def ref_owner(self, ref: bytes) -> tuple[str, str] | None:
        """(key_id, cred) that a credential ref was issued for."""
        row = self._one("SELECT key_id, cred FROM refs WHERE ref=?", ref)
        return None if row is None else (str(row[0]), str(row[1]))

    # --- outbox and retained topics -------------------------------------------------------
    def enqueue(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Append a message to the durable outbox; retained ones also replace the topic's snapshot."""
        self._db.execute(
            "INSERT INTO outbox(topic, payload, retain) VALUES (?,?,?)", (topic, payload, int(retain))
        )
        self._depth += 1
        self.on_enqueue()
        if retain:
            if payload:
                self._db.execute("INSERT OR REPLACE INTO retained VALUES (?,?)", (topic, payload))
            else:
                self._db.execute("DELETE FROM retained WHERE topic=?", (topic,))

    def outbox_batch(self, limit: int) -> list[tuple[int, str, bytes, bool]]:
        """The oldest `limit` outbox messages: (seq, topic, payload, retain)."""
        rows = self._db.execute(
            "SELECT seq, topic, payload, retain FROM outbox ORDER BY seq LIMIT ?", (limit,)
        )
        return [(int(s), str(t), bytes(p), bool(r)) for s, t, p, r in rows]

    def outbox_delete_upto(self, seq: int) -> None:
        """Drop published messages up to and including `seq`."""
        with self.transaction():
            n = self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,)).rowcount
        self._depth -= n

    @property
    def outbox_depth(self) -> int:
        """Messages waiting to be published."""
        return int(self._depth)

    def retained_snapshot(self) -> list[tuple[str, bytes]]:
        """Every retained topic with its current payload."""
        return [(str(t), bytes(p)) for t, p in self._db.execute("SELECT topic, payload FROM retained")]

    # --- locks and meta -------------------------------------------------------------------
    def event_cursor(self, lock_id: str) -> int:
        """The id of the last audit event read from a lock (0 before the first)."""
        row = self._one("SELECT last_event_id FROM locks WHERE lock_id=?", lock_id)
        return 0 if row is None else int(row[0])

    def set_event_cursor(self, lock_id: str, last_event_id: int) -> None:
        """Remember the last audit event read from a lock."""
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO locks VALUES (?,?)", (lock_id, last_event_id))

    def meta(self, k: str) -> str | None:
        """A small persisted setting."""
        row = self._one("SELECT v FROM meta WHERE k=?", k)
        return None if row is None else str(row[0])

    def set_meta(self, k: str, v: str) -> None:
        """Persist a small setting."""
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (k, v))

    def counts(self) -> dict[str, int]:
        """Row counts for the technician CLI."""
        out = {}
        for table in ("jobs", "keys", "reservations", "door_status", "slots", "outbox"):
            out[table] = int(self._one(f"SELECT count(*) FROM {table}")[0])
        return out


def _door_row(r: tuple[Any, ...]) -> DoorRow:
    return DoorRow(r[0], r[1], int(r[2] or 0), r[3], r[4], json.loads(r[5]), int(r[6]), r[7])


def _slot_row(r: tuple[Any, ...]) -> SlotRow:
    return SlotRow(
        r[0], int(r[1]), r[2], r[3], bytes(r[4]), bool(r[5]), int(r[6]),
        None if r[7] is None else bytes(r[7]), r[8], r[9],
    )
