"""The scale-out parts of every real store: per-second slices that replace and expire, the epoch that
reveals a store which lost its data, the reset mark, and verbatim audit import."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout.audit import verify
from rollout.errors import Conflict, InvalidSpec
from rollout.store.base import EpochStore, SliceRecord, SliceStore
from rollout.store.redis import RedisStore
from rollout.store.sqlite import SqliteStore

Store = SqliteStore | RedisStore


@pytest.fixture(params=["sqlite", "sqlite-memory", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend: Store
    if request.param == "sqlite":
        backend = SqliteStore(f"sqlite:///{tmp_path}/state.db")
    elif request.param == "sqlite-memory":
        backend = SqliteStore("sqlite:///:memory:")
    else:
        backend = RedisStore(request.getfixturevalue("redis_server").url)
    try:
        yield backend
    finally:
        backend.close()


def rec(second: int, replica: str = "r1", data: bytes = b"x", name: str = "window",
        version: str = "1") -> SliceRecord:
    return SliceRecord("m", version, second, name, replica, data)


def test_real_stores_offer_the_scale_out_protocols(store: Store) -> None:
    assert isinstance(store, SliceStore) and isinstance(store, EpochStore)


def test_slices_of_every_replica_come_back_for_the_seconds_asked(store: Store) -> None:
    store.put_slices([rec(100, "r1", b"a"), rec(100, "r2", b"b"), rec(101, "r1", b"c"),
                      rec(102, "r1", b"late"), rec(100, "r1", b"other", version="2")], ttl_s=60)
    got = store.read_slices("m", "1", 100, 102)
    assert sorted((r.second, r.replica, r.data) for r in got) == [(100, "r1", b"a"), (100, "r2", b"b"),
                                                                   (101, "r1", b"c")]
    assert all(r.model == "m" and r.version == "1" and r.name == "window" for r in got)


def test_a_resent_second_replaces_the_earlier_record(store: Store) -> None:
    store.put_slices([rec(100, data=b"partial")], ttl_s=60)
    store.put_slices([rec(100, data=b"complete")], ttl_s=60)
    assert [r.data for r in store.read_slices("m", "1", 100, 101)] == [b"complete"]


def test_payload_names_are_kept_apart(store: Store) -> None:
    store.put_slices([rec(100, data=b"w"), rec(100, name="drift", data=b"\x00\x01")], ttl_s=60)
    assert [r.data for r in store.read_slices("m", "1", 100, 101, {"drift"})] == [b"\x00\x01"]
    assert {r.name for r in store.read_slices("m", "1", 100, 101)} == {"window", "drift"}


def test_slices_expire_on_their_own(store: Store) -> None:
    store.put_slices([rec(100, data=b"short")], ttl_s=1)
    store.put_slices([rec(101, data=b"long")], ttl_s=60)
    deadline = time.monotonic() + 10
    while store.read_slices("m", "1", 100, 101) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.read_slices("m", "1", 100, 101) == []
    assert [r.data for r in store.read_slices("m", "1", 100, 102)] == [b"long"]


@pytest.mark.parametrize("bad", [rec(1, replica="a:b"), rec(1, replica="a|b"), rec(1, replica=""),
                                 SliceRecord("m", "1", 1.5, "window", "r", b""),  # type: ignore[arg-type]
                                 SliceRecord("m", "1", 1, "window", "r", "text")])  # type: ignore[arg-type]
def test_malformed_slices_are_refused(store: Store, bad: SliceRecord) -> None:
    with pytest.raises(InvalidSpec):
        store.put_slices([bad], ttl_s=60)


def test_slice_reads_and_ttls_are_bounded(store: Store) -> None:
    with pytest.raises(InvalidSpec):
        store.read_slices("m", "1", 0, 10**9)
    with pytest.raises(InvalidSpec):
        store.put_slices([rec(1)], ttl_s=0)


def test_the_epoch_is_set_by_the_first_write_and_then_stays(store: Store) -> None:
    assert store.epoch_state().epoch is None
    store.put_slices([rec(1)], ttl_s=60)  # measurements do not count as state
    assert store.epoch_state().epoch is None
    store.put("route", "m", {"w": 1})
    first = store.epoch_state().epoch
    store.put("route", "m", {"w": 2})
    store.append_audit("a", "x", "m", "", None, None, "r")
    assert first is not None and store.epoch_state().epoch == first


def test_the_reset_mark_keeps_the_first_lost_epoch_until_cleared(store: Store) -> None:
    store.mark_reset("old-1")
    store.mark_reset("old-2")
    assert store.epoch_state().reset_of == "old-1"
    store.clear_reset()
    assert store.epoch_state().reset_of is None


def test_audit_entries_import_verbatim_into_an_empty_log(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rollout.store.redis.AUDIT_IMPORT_CHUNK", 3)  # several script calls in a row
    source = SqliteStore("sqlite:///:memory:")
    try:
        for i in range(7):
            source.append_audit("alice", f"act{i}", "m" if i % 2 else "n", "1", None, {"i": i}, "why")
        records = source.audit_all()
    finally:
        source.close()
    assert store.import_audit(records) == 7
    assert store.audit_all() == records and verify(store.audit_all()).ok
    assert [r.seq for r in store.audit(model="m")] == [6, 4, 2]
    appended = store.append_audit("bob", "after", "m", "1", None, None, "continues the chain")
    assert appended.seq == 8 and appended.prev_hash == records[-1].hash
    with pytest.raises(Conflict):
        store.import_audit(records)
