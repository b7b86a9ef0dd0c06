"""One contract for every StateStore: SQLite (file and memory), Redis (a private server) and the fake.

Backend-specific promises (durability across restarts, cross-process notification, outages) follow.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rollout.audit import entry_hash, verify
from rollout.errors import InvalidSpec, StaleWrite, StoreUnavailable
from rollout.store import open_store
from rollout.store.base import Change, StateStore, Write
from rollout.store.redis import RedisStore
from rollout.store.sqlite import SqliteStore
from tests.conftest import RedisServer
from tests.fakes.store import FakeStore

BACKENDS = ["sqlite", "sqlite-memory", "redis", "fake"]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    backend: StateStore
    if request.param == "sqlite":
        backend = SqliteStore(f"sqlite:///{tmp_path}/state.db")
    elif request.param == "sqlite-memory":
        backend = SqliteStore("sqlite:///:memory:")
    elif request.param == "redis":
        backend = RedisStore(request.getfixturevalue("redis_server").url)
    else:
        backend = FakeStore()
    try:
        yield backend
    finally:
        backend.close()


def run_threads(n: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# -- documents -------------------------------------------------------------------------------------


def test_store_satisfies_the_protocol(store: StateStore) -> None:
    assert isinstance(store, StateStore)
    assert store.ping()


def test_missing_document_reads_as_none(store: StateStore) -> None:
    assert store.get("route", "nobody") is None


def test_revisions_start_at_one_and_count_writes(store: StateStore) -> None:
    assert store.put("route", "m", {"w": 1}) == 1
    assert store.put("route", "m", {"w": 2}) == 2
    doc = store.get("route", "m")
    assert doc is not None and doc.revision == 2 and doc.value == {"w": 2}


def test_values_round_trip_and_are_not_aliased(store: StateStore) -> None:
    value: dict[str, Any] = {"name": "café ✓", "f": 0.1, "n": None, "b": True, "deep": {"l": [1, 2.5, "x"]}}
    store.put("rollout", "m", value)
    value["deep"]["l"].append("changed after the write")
    doc = store.get("rollout", "m")
    assert doc is not None
    assert doc.value == {"name": "café ✓", "f": 0.1, "n": None, "b": True, "deep": {"l": [1, 2.5, "x"]}}


def test_expected_revision_zero_means_create_only(store: StateStore) -> None:
    assert store.put("version", "m/1", {"a": 1}, expected_revision=0) == 1
    with pytest.raises(StaleWrite) as err:
        store.put("version", "m/1", {"a": 2}, expected_revision=0)
    assert "version/m/1" in err.value.message and "revision 1" in err.value.message
    assert store.get("version", "m/1").value == {"a": 1}  # type: ignore[union-attr]


def test_expected_revision_must_match_the_current_one(store: StateStore) -> None:
    store.put("route", "m", {"v": 1})
    store.put("route", "m", {"v": 2})
    with pytest.raises(StaleWrite) as err:
        store.put("route", "m", {"v": 3}, expected_revision=1)
    assert "route/m" in err.value.message and "revision 2" in err.value.message
    assert "revision 1" in err.value.message
    assert store.put("route", "m", {"v": 3}, expected_revision=2) == 3


def test_put_many_is_all_or_nothing(store: StateStore) -> None:
    store.put("version", "m/1", {"stage": "canary"})
    writes = [Write("version", "m/2", {"stage": "production"}, 0),
              Write("version", "m/1", {"stage": "archived"}, 7)]
    with pytest.raises(StaleWrite, match="version/m/1"):
        store.put_many(writes)
    assert store.get("version", "m/2") is None
    assert store.get("version", "m/1").value == {"stage": "canary"}  # type: ignore[union-attr]
    writes[1] = Write("version", "m/1", {"stage": "archived"}, 1)
    assert store.put_many(writes) == [1, 2]


def test_deletes_return_zero_and_a_recreated_document_starts_again(store: StateStore) -> None:
    store.put("fault", "m/1", {"error_rate": 0.5})
    with pytest.raises(StaleWrite):
        store.put_many([Write("fault", "m/1", None, expected_revision=3)])
    assert store.put_many([Write("fault", "m/1", None, expected_revision=1)]) == [0]
    assert store.get("fault", "m/1") is None
    assert store.list("fault") == []
    assert store.put("fault", "m/1", {"error_rate": 0.1}, expected_revision=0) == 1


@pytest.mark.parametrize(("value", "field"), [
    ({"x": float("nan")}, "route/m"),
    ({"x": {1, 2}}, "route/m"),
    (["not", "an", "object"], "route/m"),
])
def test_non_json_values_are_refused_naming_the_document(store: StateStore, value: Any, field: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        store.put("route", "m", value)
    assert err.value.field == field
    assert store.get("route", "m") is None


def test_integers_keep_their_value_up_to_64_bits_and_larger_ones_are_refused(store: StateStore) -> None:
    edges = {"max": 2**64 - 1, "min": -(2**63), "seq": [2**53 + 1, -1, 0]}
    store.put("route", "m", edges)
    doc = store.get("route", "m")
    assert doc is not None and doc.value == edges
    assert all(type(v) is int for v in (doc.value["max"], doc.value["min"], *doc.value["seq"]))
    with pytest.raises(InvalidSpec) as err:
        store.put("route", "m", {"deep": [{"n": 2**64}]})
    assert err.value.field == "route/m" and "64 bits" in err.value.message
    assert store.get("route", "m").value == edges  # type: ignore[union-attr]


def test_text_orjson_cannot_parse_still_reads_back(store: StateStore) -> None:
    value = {"lone": "\ud800 surrogate", "tab": "a\tb"}
    store.put("route", "m", value)
    assert store.list("route") == [("m", store.get("route", "m"))]
    assert store.get("route", "m").value == value  # type: ignore[union-attr]


def test_put_many_refuses_a_document_twice_and_bad_revisions(store: StateStore) -> None:
    with pytest.raises(InvalidSpec, match=r"writes\[1\]"):
        store.put_many([Write("route", "m", {}), Write("route", "m", {})])
    with pytest.raises(InvalidSpec, match=r"writes\[0\]\.expected_revision"):
        store.put_many([Write("route", "m", {}, -1)])
    with pytest.raises(InvalidSpec, match=r"writes\[0\]\.key"):
        store.put_many([Write("route", "", {})])


def test_list_is_sorted_filtered_by_prefix_and_kind(store: StateStore) -> None:
    for key in ["b/2", "a%/1", "b/10", "a_/1", "B/1", "b/1"]:
        store.put("version", key, {"k": key})
    store.put("model", "b", {"k": "model"})
    assert [k for k, _ in store.list("version")] == sorted(["b/2", "a%/1", "b/10", "a_/1", "B/1", "b/1"])
    listed = store.list("version", prefix="b/")
    assert [k for k, _ in listed] == ["b/1", "b/10", "b/2"]
    assert all(doc.value == {"k": k} and doc.revision == 1 for k, doc in listed)
    assert [k for k, _ in store.list("version", prefix="a%")] == ["a%/1"]
    assert store.list("route") == []


def test_concurrent_compare_and_set_loses_no_increment(store: StateStore) -> None:
    store.put("rollout", "counter", {"n": 0})

    def bump(_: int) -> None:
        for _ in range(20):
            while True:
                doc = store.get("rollout", "counter")
                assert doc is not None
                try:
                    store.put("rollout", "counter", {"n": doc.value["n"] + 1}, doc.revision)
                    break
                except StaleWrite:
                    continue

    run_threads(4, bump)
    doc = store.get("rollout", "counter")
    assert doc is not None and doc.value["n"] == 80 and doc.revision == 81


# -- audit -----------------------------------------------------------------------------------------


def test_audit_chains_entries_and_answers_queries(store: StateStore) -> None:
    first = store.append_audit("alice", "register", "m", "1", None, {"stage": "validated"}, "new", ts=10.0)
    second = store.append_audit("bob", "promote", "other", "3", {"stage": "canary"},
                                {"stage": "production"}, "slo met", {"p99": 12.5}, ts=20.0)
    third = store.append_audit("carol", "transition", "m", "1", {"s": 1}, {"s": 2}, "why", ts=30.0)
    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert first.prev_hash == "" and second.prev_hash == first.hash and third.prev_hash == second.hash
    assert all(entry_hash(e) == e.hash for e in (first, second, third))
    assert store.audit() == [third, second, first]
    assert store.audit(model="m") == [third, first]
    assert store.audit(since=20.0) == [third, second]
    assert store.audit(model="m", since=15.0) == [third]
    assert store.audit(limit=2) == [third, second]
    assert store.audit_all() == [first, second, third]
    assert store.audit_all()[1].evidence == {"p99": 12.5}
    assert verify(store.audit_all()).ok


def test_concurrent_appends_form_one_unbroken_chain(store: StateStore) -> None:
    def append(i: int) -> None:
        for j in range(10):
            store.append_audit(f"actor{i}", "tick", "m", str(j), None, None, "")

    run_threads(4, append)
    entries = store.audit_all()
    assert [e.seq for e in entries] == list(range(1, 41))
    result = verify(entries)
    assert result.ok and result.checked == 40


# -- notifications and lifecycle -------------------------------------------------------------------


def test_subscribers_hear_changes_until_they_unsubscribe(store: StateStore) -> None:
    heard: queue.Queue[Change] = queue.Queue()
    late: queue.Queue[Change] = queue.Queue()
    unsubscribe = store.subscribe(heard.put)
    store.put_many([Write("route", "m", {"w": 1}), Write("model", "m", {"x": 1})])
    got = {heard.get(timeout=5), heard.get(timeout=5)}
    assert got == {Change("route", "m", 1), Change("model", "m", 1)}
    unsubscribe()
    store.put("route", "m", {"w": 2})
    unsubscribe_late = store.subscribe(late.put)
    store.put("route", "m", {"w": 3})
    assert late.get(timeout=5) == Change("route", "m", 3)
    unsubscribe_late()
    assert heard.empty()  # revisions 2 and 3 were written after the first callback left


def test_a_failing_subscriber_does_not_silence_others(store: StateStore) -> None:
    heard: queue.Queue[Change] = queue.Queue()

    def broken(change: Change) -> None:
        raise RuntimeError("subscriber bug")

    stop_broken, stop_heard = store.subscribe(broken), store.subscribe(heard.put)
    store.put("route", "m", {})
    assert heard.get(timeout=5) == Change("route", "m", 1)
    stop_broken()
    stop_heard()


def test_a_closed_store_is_unavailable(tmp_path: Path, redis_server: RedisServer) -> None:
    for backend in (SqliteStore(f"sqlite:///{tmp_path}/s.db"), RedisStore(redis_server.url)):
        backend.close()
        with pytest.raises(StoreUnavailable, match="closed"):
            backend.get("route", "m")
        assert backend.ping() is False
        backend.close()  # closing twice is harmless


# -- choosing a backend ----------------------------------------------------------------------------


def test_open_store_chooses_the_backend_from_the_url(tmp_path: Path, redis_server: RedisServer) -> None:
    opened = [open_store(f"sqlite:///{tmp_path}/a.db"), open_store("sqlite:///:memory:"),
              open_store(redis_server.url)]
    try:
        assert [type(s).__name__ for s in opened] == ["SqliteStore", "SqliteStore", "RedisStore"]
        assert all(s.ping() for s in opened)
    finally:
        for s in opened:
            s.close()


@pytest.mark.parametrize("url", ["", "postgres://db/x", "sqlite://relative.db", "sqlite:///", "state.db"])
def test_open_store_refuses_other_urls(url: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        open_store(url)
    assert err.value.field == "store" and "expected" in err.value.message


def test_open_store_never_echoes_a_password() -> None:
    with pytest.raises(InvalidSpec) as err:
        open_store("mongodb://user:s3cret@host/db")
    assert "s3cret" not in err.value.message
    store = RedisStore("redis://user:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in store.url
    store.close()


# -- SQLite ----------------------------------------------------------------------------------------


def test_sqlite_survives_reopening_and_uses_wal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    first = SqliteStore(url)
    first.put("route", "m", {"w": 1})
    first.append_audit("alice", "x", "m", "1", None, None, "")
    first.close()
    second = SqliteStore(url)
    try:
        assert second.get("route", "m").revision == 1  # type: ignore[union-attr]
        assert verify(second.audit_all()).checked == 1
    finally:
        second.close()
    with sqlite3.connect(tmp_path / "state.db") as raw:
        mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
    raw.close()
    assert mode == "wal"


_OPEN_AND_WRITE = """
import sys, time
from rollout.store.sqlite import SqliteStore
url, start, name = sys.argv[1], float(sys.argv[2]), sys.argv[3]
time.sleep(max(0.0, start - time.time()))
for i in range(20):
    store = SqliteStore(url)  # raises StoreUnavailable (exit 1) when the open loses a race
    store.put("route", f"{name}-{i}", {"i": i})
    store.close()
"""


@pytest.mark.integration
def test_sqlite_processes_opening_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    """Workers of one host start at once on the same new file; switching it to WAL must not fail
    the ones that lose the race (SQLite reports 'locked' at once there instead of waiting)."""
    root = Path(__file__).resolve().parents[2]
    for trial in range(3):
        url = f"sqlite:///{tmp_path}/race-{trial}.db"
        start = time.time() + 1.5  # every interpreter has started by then
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AND_WRITE, url, str(start), f"p{n}"], cwd=root,
                                  stderr=subprocess.PIPE, text=True) for n in range(4)]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
        store = SqliteStore(url)
        try:
            assert len(store.list("route")) == 80
        finally:
            store.close()


def test_sqlite_sees_another_process_changes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    mine, theirs = SqliteStore(url), SqliteStore(url)  # two instances = two worker processes
    heard: queue.Queue[Change] = queue.Queue()
    unsubscribe = mine.subscribe(heard.put)
    try:
        theirs.put("route", "m", {"w": 5})
        assert heard.get(timeout=5) == Change("route", "m", 1)
        assert mine.get("route", "m").value == {"w": 5}  # type: ignore[union-attr]
    finally:
        unsubscribe()
        mine.close()
        theirs.close()


def test_sqlite_locked_or_missing_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="cannot open"):
        SqliteStore(f"sqlite:///{tmp_path}/no/such/dir/state.db")
    store = SqliteStore(f"sqlite:///{tmp_path}/busy.db", busy_timeout_s=0.05)
    holder = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable, match="locked") as err:
            store.put("route", "m", {})
        assert isinstance(err.value.__cause__, sqlite3.OperationalError)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        store.close()


def test_sqlite_refuses_documents_from_a_newer_schema(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/s.db")
    store.put("route", "m", {"w": 1})
    with sqlite3.connect(tmp_path / "s.db") as raw:
        raw.execute("UPDATE documents SET value = ?", (json.dumps({"schema": 99, "value": {}}),))
    raw.close()
    try:
        with pytest.raises(StoreUnavailable, match="schema 99"):
            store.get("route", "m")
    finally:
        store.close()


# -- Redis -----------------------------------------------------------------------------------------


def kill_and_restart(server: RedisServer, *, wipe: bool) -> None:
    """SIGKILL: no shutdown hook gets to flush anything, so only what was fsynced survives."""
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait()
    server.proc = None
    if wipe:
        server.wipe()
    server.start()


def test_redis_acknowledged_writes_survive_a_crash(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    try:
        store.put_many([Write("route", "m", {"w": 1}), Write("version", "m/1", {"s": "canary"})])
        store.append_audit("alice", "x", "m", "1", None, None, "")
        epoch = store.epoch()
        kill_and_restart(redis_server, wipe=False)
        assert store.get("route", "m").value == {"w": 1}  # type: ignore[union-attr]
        assert [k for k, _ in store.list("version")] == ["m/1"]
        assert verify(store.audit_all()).checked == 1
        assert epoch is not None and store.epoch() == epoch
    finally:
        store.close()


def test_redis_restarted_empty_shows_as_a_new_epoch(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    try:
        assert store.epoch() is None  # nothing written yet
        store.put("route", "m", {"w": 1})
        before = store.epoch()
        kill_and_restart(redis_server, wipe=True)
        assert store.epoch() is None and store.get("route", "m") is None
        store.put("route", "m", {"w": 1})
        assert store.epoch() not in (None, before)
    finally:
        store.close()


def test_redis_outage_fails_fast_and_ping_reports_it(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    try:
        store.put("route", "m", {})
        redis_server.stop()
        assert store.ping() is False
        with pytest.raises(StoreUnavailable) as err:
            store.get("route", "m")
        assert "127.0.0.1" in err.value.message and err.value.__cause__ is not None
        with pytest.raises(StoreUnavailable):
            store.append_audit("a", "b", "m", "1", None, None, "")
        redis_server.start()
        assert store.ping() and store.get("route", "m") is not None
    finally:
        store.close()


def test_redis_listener_reconnects_after_a_restart(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    heard: queue.Queue[Change] = queue.Queue()
    unsubscribe = store.subscribe(heard.put)
    try:
        kill_and_restart(redis_server, wipe=False)
        # Messages published before the listener is back are lost by design; keep writing until heard.
        for attempt in range(50):
            store.put("route", "m", {"attempt": attempt})
            try:
                change = heard.get(timeout=0.2)
                break
            except queue.Empty:
                continue
        else:
            pytest.fail("the listener never came back after the restart")
        assert change.kind == "route" and change.key == "m"
    finally:
        unsubscribe()
        store.close()


def test_redis_prefixes_keep_deployments_apart(redis_server: RedisServer) -> None:
    blue, green = RedisStore(redis_server.url), RedisStore(redis_server.url + "?prefix=green:")
    try:
        blue.put("route", "m", {"who": "blue"})
        assert green.get("route", "m") is None and green.list("route") == []
        green.append_audit("a", "b", "m", "1", None, None, "")
        assert blue.audit_all() == []
    finally:
        blue.close()
        green.close()
