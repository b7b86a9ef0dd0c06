"""Snapshots of the state and their restore: everything comes back (audit chain included), a store that
holds state is not overwritten unless forced, a broken chain is refused, and the reset mark is cleared."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from rollout.audit import verify
from rollout.errors import Conflict, InvalidSpec
from rollout.snapshot import Snapshot, read_documents, restore, take
from rollout.store.base import KIND_LEASE, KIND_ROUTE, KIND_VERSION, SliceRecord
from rollout.store.sqlite import SqliteStore


def fresh() -> SqliteStore:
    return SqliteStore("sqlite:///:memory:")


@pytest.fixture
def source() -> Iterator[SqliteStore]:
    store = fresh()
    store.put(KIND_VERSION, "m/1", {"stage": "production"})
    store.put(KIND_VERSION, "m/2", {"stage": "canary"})
    store.put(KIND_ROUTE, "m", {"policy": "canary", "weights": {"1": 70, "2": 30}})
    store.put("rollout", "m", {"spec": {"candidate": "2"}, "status": {"phase": "progressing"}})
    store.put(KIND_LEASE, "controller", {"holder": "gone", "term": 3, "ttl_s": 5, "renewed_at": 1})
    for i in range(3):
        store.append_audit("alice", f"step{i}", "m", "2", None, {"i": i}, "why")
    yield store
    store.close()


def test_a_snapshot_round_trips_through_json_and_restores_everything(source: SqliteStore) -> None:
    snapshot = Snapshot.from_dict(json.loads(json.dumps(take(source, source="test").to_dict())))
    assert snapshot.document_count == 4  # the lease is not state
    target = fresh()
    try:
        target.mark_reset("lost-epoch")
        report = restore(target, snapshot)
        assert (report.documents, report.audit_entries, report.audit_kept) == (4, 3, False)
        assert read_documents(target) == read_documents(source)
        assert target.audit_all() == source.audit_all() and verify(target.audit_all()).ok
        assert target.get(KIND_LEASE, "controller") is None
        state = target.epoch_state()
        assert state.reset_of is None and state.epoch is not None
    finally:
        target.close()


def test_a_store_holding_state_is_not_overwritten_without_force(source: SqliteStore) -> None:
    snapshot = take(source)
    target = fresh()
    try:
        target.put(KIND_ROUTE, "m", {"policy": "canary", "weights": {"1": 100}})
        target.append_audit("bob", "own", "m", "", None, None, "kept")
        with pytest.raises(Conflict, match="1 route document"):
            restore(target, snapshot)
        report = restore(target, snapshot, force=True)
        assert report.audit_kept and report.audit_entries == 0
        assert read_documents(target) == read_documents(source)
        assert [r.action for r in target.audit_all()] == ["own"]
    finally:
        target.close()


def test_measurements_and_a_lease_do_not_make_a_store_count_as_holding_state(source: SqliteStore) -> None:
    target = fresh()
    try:
        target.put(KIND_LEASE, "controller", {"holder": "x", "term": 1, "ttl_s": 5, "renewed_at": 1})
        target.put_slices([SliceRecord("m", "1", 5, "window", "r", b"{}")], ttl_s=60)
        assert restore(target, take(source)).documents == 4
    finally:
        target.close()


def test_a_broken_audit_chain_is_refused(source: SqliteStore) -> None:
    body = take(source).to_dict()
    body["audit"][1]["reason"] = "edited afterwards"
    target = fresh()
    try:
        with pytest.raises(InvalidSpec, match="breaks at seq 2"):
            restore(target, Snapshot.from_dict(body))
        assert read_documents(target) == {k: {} for k in read_documents(target)}
    finally:
        target.close()


@pytest.mark.parametrize("body", [{}, {"format": "other"}, {"format": "servegate-state", "format_version": 9},
                                  {"format": "servegate-state", "format_version": 1, "documents": {"lease": {}},
                                   "audit": []},
                                  {"format": "servegate-state", "format_version": 1, "documents": {},
                                   "audit": "no"}])
def test_malformed_snapshots_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(InvalidSpec):
        Snapshot.from_dict(body)
