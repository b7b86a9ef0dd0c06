"""The audit chain: the canonical hash, verification, and tampering caught in every backend."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from rollout.audit import HASHED_FIELDS, AuditLog, entry_hash
from rollout.errors import InvalidSpec
from rollout.store.base import AuditRecord
from rollout.store.redis import RedisStore
from rollout.store.sqlite import SqliteStore
from tests.conftest import RedisServer
from tests.fakes.store import FakeStore


def sample(seq: int = 1, prev_hash: str = "") -> AuditRecord:
    record = AuditRecord(seq=seq, ts=100.5, actor="alice", action="promote", model="m", version="2",
                         before={"stage": "canary", "weights": [10, 90]}, after={"stage": "production"},
                         reason="slo met", evidence={"p99_ms": 12.5, "window": {"n": 3}}, prev_hash=prev_hash)
    return replace(record, hash=entry_hash(record))


def filled_log(store: FakeStore | SqliteStore | RedisStore, n: int = 5) -> AuditLog:
    log = AuditLog(store)
    for i in range(1, n + 1):
        log.record("alice", "transition", "m", str(i), before={"stage": "validated"},
                   after={"stage": "canary"}, reason=f"step {i}", evidence={"i": i}, ts=float(i))
    return log


def test_the_hash_ignores_key_order_and_covers_every_field() -> None:
    base = sample()
    reordered = replace(base, before={"weights": [10, 90], "stage": "canary"},
                        evidence={"window": {"n": 3}, "p99_ms": 12.5})
    assert entry_hash(reordered) == base.hash
    changed: dict[str, Any] = {"seq": 2, "ts": 100.25, "actor": "bob", "action": "rollback", "model": "n", "version": "3",
               "before": None, "after": {"stage": "archived"}, "reason": "other", "evidence": {},
               "prev_hash": "ab"}
    assert set(changed) == set(HASHED_FIELDS)
    for name, value in changed.items():
        assert entry_hash(replace(base, **{name: value})) != base.hash, name


def test_verify_accepts_an_intact_chain() -> None:
    log = filled_log(FakeStore())
    result = log.verify()
    assert result.ok and result.checked == 5 and result.broken_seq is None and result.reason == ""


def test_an_edited_entry_is_a_hash_mismatch() -> None:
    store = FakeStore()
    log = filled_log(store)
    store.tamper_audit(3, reason="nothing to see here")
    result = log.verify()
    assert not result.ok and result.broken_seq == 3 and result.checked == 2
    assert result.reason.startswith("hash mismatch")


def test_an_edited_and_rehashed_entry_breaks_the_next_link() -> None:
    store = FakeStore()
    log = filled_log(store)
    forged = replace(store.audit_all()[2], actor="mallory")
    store.tamper_audit(3, actor="mallory", hash=entry_hash(forged))
    result = log.verify()
    assert not result.ok and result.broken_seq == 4 and result.reason.startswith("prev_hash mismatch")


@pytest.mark.parametrize(("deleted", "broken"), [(1, 2), (3, 4)])
def test_a_deleted_entry_is_a_seq_gap(deleted: int, broken: int) -> None:
    store = FakeStore()
    log = filled_log(store)
    store.delete_audit(deleted)
    result = log.verify()
    assert not result.ok and result.broken_seq == broken
    assert result.reason == f"seq gap: expected {deleted}, found {broken}"


def test_entries_are_normalised_so_they_verify_after_storage() -> None:
    store = FakeStore()
    record = AuditLog(store).record("alice", "x", before={"t": (1, 2)}, evidence={"k": [1.5]})
    assert record.before == {"t": [1, 2]} and entry_hash(record) == record.hash
    with pytest.raises(InvalidSpec) as err:
        AuditLog(store).record("alice", "x", evidence={"p99": float("inf")})
    assert err.value.field == "evidence"


def test_the_facade_checks_its_arguments() -> None:
    log = AuditLog(FakeStore())
    with pytest.raises(InvalidSpec, match="actor"):
        log.record("", "promote")
    with pytest.raises(InvalidSpec, match="action"):
        log.record("alice", "")
    with pytest.raises(InvalidSpec, match="limit"):
        log.entries(limit=0)


def test_the_facade_reads_newest_first() -> None:
    log = filled_log(FakeStore(), 4)
    assert [e.version for e in log.entries()] == ["4", "3", "2", "1"]
    assert [e.version for e in log.entries(since=3.0)] == ["4", "3"]


def test_tampering_with_a_sqlite_row_is_detected(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/audit.db")
    try:
        log = filled_log(store)
        with sqlite3.connect(tmp_path / "audit.db") as raw:
            entry = json.loads(raw.execute("SELECT entry FROM audit WHERE seq = 2").fetchone()[0])
            entry["after"] = {"stage": "production"}
            raw.execute("UPDATE audit SET entry = ? WHERE seq = 2", (json.dumps(entry),))
            raw.execute("DELETE FROM audit WHERE seq = 4")
        raw.close()
        result = log.verify()
        assert (result.ok, result.broken_seq, result.reason[:13]) == (False, 2, "hash mismatch")
    finally:
        store.close()


def test_deleting_a_sqlite_row_is_detected(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/audit.db")
    try:
        log = filled_log(store)
        with sqlite3.connect(tmp_path / "audit.db") as raw:
            raw.execute("DELETE FROM audit WHERE seq = 4")
        raw.close()
        assert (log.verify().broken_seq, log.verify().reason[:7]) == (5, "seq gap")
    finally:
        store.close()


def test_tampering_with_a_redis_value_is_detected(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    raw = redis.Redis.from_url(redis_server.url)
    try:
        log = filled_log(store)
        entry = json.loads(raw.hget("servegate:audit:entries", "3"))  # type: ignore[arg-type]
        entry["reason"] = "approved by the board"
        raw.hset("servegate:audit:entries", "3", json.dumps(entry))
        assert (log.verify().broken_seq, log.verify().reason[:13]) == (3, "hash mismatch")
        raw.hdel("servegate:audit:entries", "2")
        assert (log.verify().broken_seq, log.verify().reason[:7]) == (3, "seq gap")
    finally:
        raw.close()
        store.close()
