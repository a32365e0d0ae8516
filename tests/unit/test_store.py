"""Store: migrations by user_version, outbox order and depth, retained snapshot, tombstones."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from gateway.rules import KeyFacts
from gateway.secretbox import SecretBox
from gateway.store import SCHEMA_VERSION, KeyRecord, Store, StoreError

BOX = SecretBox(bytes(32))


def user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_fresh_db_is_migrated_and_reopen_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "gateway.db"
    s = Store(path, BOX)
    s.close()
    assert user_version(path) == SCHEMA_VERSION >= 1
    s = Store(path, BOX)  # no migration runs twice (CREATE TABLE would fail)
    assert s.counts() == dict.fromkeys(("jobs", "keys", "reservations", "door_status", "slots", "outbox"), 0)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this gateway"):
        Store(path, BOX)


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        Store(path, BOX)


def test_outbox_order_depth_and_retained(tmp_path: Path) -> None:
    s = Store(tmp_path / "gateway.db", BOX)
    with s.transaction():
        for i in range(10):
            s.enqueue(f"t/{i % 3}", str(i).encode(), retain=i % 2 == 0)
    assert s.outbox_depth == 10
    batch = s.outbox_batch(4)
    assert [p for _s, _t, p, _r in batch] == [b"0", b"1", b"2", b"3"]
    assert [r for *_x, r in batch] == [True, False, True, False]
    s.outbox_delete_upto(batch[-1][0])
    assert s.outbox_depth == 6 and next(p for _s, _t, p, _r in s.outbox_batch(100)) == b"4"
    # Retained snapshot: the last payload per topic; an empty payload clears the topic.
    assert dict(s.retained_snapshot()) == {"t/0": b"6", "t/2": b"8", "t/1": b"4"}
    with s.transaction():
        s.enqueue("t/0", b"", retain=True)
    assert "t/0" not in dict(s.retained_snapshot())
    # A rolled back transaction leaves neither messages nor a wrong depth.
    with pytest.raises(RuntimeError), s.transaction():
        s.enqueue("t/x", b"lost")
        raise RuntimeError
    assert s.outbox_depth == 7
    s.close()
    s = Store(tmp_path / "gateway.db", BOX)  # the outbox survives a restart, in order
    assert s.outbox_depth == 7
    assert [p for _s, _t, p, _r in s.outbox_batch(100)] == [b"4", b"5", b"6", b"7", b"8", b"9", b""]
    s.close()


def test_keys_are_sealed_and_tombstones_keep_versions(tmp_path: Path) -> None:
    s = Store(tmp_path / "gateway.db", BOX)
    facts = KeyFacts("k-1", False, frozenset({"101"}), None, None, True, "R-1")
    with s.transaction():
        s.put_key(KeyRecord("k-1", 3, facts, "guest", {"door_code": b"90817263"}))
    rec = s.get_key("k-1")
    assert rec is not None and rec.secrets == {"door_code": b"90817263"} and "908" not in repr(rec)
    assert s.keys_for_reservation("R-1") == ["k-1"] and s.keys_for_door("101") == ["k-1"]
    with s.transaction():
        s.tombstone("k-1", 4)
    assert s.key_version("k-1") == (4, True) and s.live_key_ids() == []
    assert s.keys_for_door("101") == [] and s.get_key("k-1").facts.revoked  # type: ignore[union-attr]
    s.close()
    raw = b"".join(f.read_bytes() for f in tmp_path.iterdir())
    assert b"90817263" not in raw


def test_slot_allocation(tmp_path: Path) -> None:
    s = Store(tmp_path / "gateway.db", BOX)
    with s.transaction():
        a = s.allocate_slot("L", "k-1", "door_code", b"r" * 16, 1, 2)
        b = s.allocate_slot("L", "k-2", "door_code", b"s" * 16, 1, 2)
        c = s.allocate_slot("L", "k-3", "door_code", b"t" * 16, 1, 2)
    assert (a, b, c) == (0, 1, None)
    with s.transaction():
        s.free_slot("L", 0)
        assert s.allocate_slot("L", "k-3", "door_code", b"t" * 16, 1, 2) == 0
    assert s.ref_owner(b"t" * 16) == ("k-3", "door_code")
    s.close()
