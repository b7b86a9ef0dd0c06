"""The store watch (a store that lost its data is noticed, marked and held until restored), the state
mirror (a copy taken only from the trusted epoch) and the controller's leadership gate."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest

from gateway.leadership import Leadership
from gateway.mirror import StateMirror
from gateway.observability.metrics import Metrics
from gateway.store_watch import StoreWatch
from rollout.errors import StoreUnavailable
from rollout.lease import Lease
from rollout.snapshot import restore
from rollout.store.base import KIND_LEASE, KIND_ROUTE, Document, EpochState, Write
from rollout.store.sqlite import SqliteStore


class SwappableStore(SqliteStore):
    """A real SQLite store that can be 'restarted empty' (a fresh database behind the same object) or
    made unreachable, as a Redis server can."""

    down = False

    def _reach(self) -> None:
        if self.down:
            raise StoreUnavailable("down for the test")

    def epoch_state(self) -> EpochState:
        self._reach()
        return super().epoch_state()

    def get(self, kind: str, key: str) -> Document | None:
        self._reach()
        return super().get(kind, key)

    def put_many(self, writes: Sequence[Write]) -> list[int]:
        self._reach()
        return super().put_many(writes)

    def wipe(self) -> None:
        self.close()
        self.__init__("sqlite:///:memory:")  # type: ignore[misc]


@pytest.fixture
def store() -> Iterator[SwappableStore]:
    s = SwappableStore("sqlite:///:memory:")
    yield s
    s.close()


def gauge(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def test_an_unchanged_epoch_is_ok_and_an_emptied_store_is_reset(store: SwappableStore) -> None:
    metrics = Metrics()
    watch = StoreWatch(store, metrics)
    store.put(KIND_ROUTE, "m", {"w": 1})
    watch.check()
    first = watch.epoch
    watch.check()
    assert first is not None and watch.state == "ok" and watch.details() == {"store": "ok"}
    store.wipe()
    assert watch.check() is False
    assert watch.reset and watch.state == "reset" and gauge(metrics, "servegate_store_reset") == 1
    assert store.epoch_state().reset_of == first  # other replicas and new ones learn it from the store


def test_a_mark_left_by_another_replica_resets_this_one_too(store: SwappableStore) -> None:
    store.put(KIND_ROUTE, "m", {"w": 1})
    store.mark_reset("an-epoch-seen-elsewhere")
    watch = StoreWatch(store, Metrics())
    watch.check()
    assert watch.reset


def test_clearing_the_mark_restores_once(store: SwappableStore) -> None:
    metrics = Metrics()
    watch = StoreWatch(store, metrics)
    store.put(KIND_ROUTE, "m", {"w": 1})
    watch.check()
    store.wipe()
    watch.check()
    store.put(KIND_ROUTE, "m", {"w": 2})  # someone writes: still reset while the mark is there
    store.mark_reset("x")
    assert watch.check() is False and watch.reset
    store.clear_reset()
    assert watch.check() is True
    assert not watch.reset and watch.state == "ok" and watch.epoch == store.epoch_state().epoch
    assert gauge(metrics, "servegate_store_reset") == 0
    assert watch.check() is False


def test_an_unreachable_store_or_a_failing_part_is_degraded(store: SwappableStore) -> None:
    failing = [False]
    watch = StoreWatch(store, Metrics(), degraded=lambda: failing[0])
    store.down = True
    watch.check()
    assert watch.state == "degraded"
    store.down = False
    watch.check()
    assert watch.state == "ok"
    failing[0] = True
    assert watch.state == "degraded"


def test_the_mirror_copies_state_and_new_audit_entries(store: SwappableStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.mirror.AUDIT_STEP", 3)
    watch = StoreWatch(store, Metrics())
    mirror = StateMirror(store, watch, source="replica-1")
    assert mirror.snapshot() is None
    store.put(KIND_ROUTE, "m", {"w": 1})
    for i in range(5):  # more than one step: read through audit_all
        store.append_audit("a", f"x{i}", "m", "", None, None, "r")
    watch.check()
    assert mirror.refresh(now=10.0)
    store.append_audit("a", "later", "m", "", None, None, "r")  # one new entry: read incrementally
    store.put(KIND_ROUTE, "m", {"w": 2})
    assert mirror.refresh(now=11.0)
    snapshot = mirror.snapshot()
    assert snapshot is not None and snapshot.taken_at == 11.0 and snapshot.source == "replica-1"
    assert snapshot.documents[KIND_ROUTE] == {"m": {"w": 2}}
    assert [r.seq for r in snapshot.audit] == [1, 2, 3, 4, 5, 6]


def test_the_mirror_rereads_on_state_changes_but_not_on_lease_renewals(store: SwappableStore,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.mirror.DEBOUNCE_S", 0.01)
    mirror = StateMirror(store, StoreWatch(store, Metrics()), source="replica-1", interval_s=60.0)
    reads: list[float] = []
    monkeypatch.setattr(mirror, "refresh", lambda now: reads.append(now) or True)

    async def scenario() -> tuple[int, int, int]:
        stop = asyncio.Event()
        task = asyncio.ensure_future(mirror.run(stop))
        await asyncio.sleep(0.3)
        first = len(reads)  # the read at start
        for term in range(5):
            store.put(KIND_LEASE, "controller", {"holder": "a", "term": term})
        await asyncio.sleep(0.3)
        after_leases = len(reads)
        store.put(KIND_ROUTE, "m", {"w": 3})
        await asyncio.sleep(0.3)
        stop.set()
        await task
        return first, after_leases, len(reads)

    first, after_leases, after_route = asyncio.run(scenario())
    assert first == 1 and after_leases == 1 and after_route == 2


def test_the_mirror_never_copies_from_an_emptied_store_and_restores_from_its_copy(store: SwappableStore) -> None:
    watch = StoreWatch(store, Metrics())
    mirror = StateMirror(store, watch, source="r")
    store.put(KIND_ROUTE, "m", {"w": 1})
    store.append_audit("a", "x", "m", "", None, None, "r")
    watch.check()
    assert mirror.refresh(now=1.0)
    store.wipe()
    store.put(KIND_ROUTE, "other", {"w": 9})  # a new epoch, not yet noticed by the watch
    assert not mirror.refresh(now=2.0)
    watch.check()
    assert not mirror.refresh(now=3.0)
    copy = mirror.snapshot()
    assert copy is not None and copy.taken_at == 1.0
    restore(store, copy, force=True)
    assert store.get(KIND_ROUTE, "m") is not None and len(store.audit_all()) == 1
    assert watch.check() is True  # the restore cleared the mark


def test_no_controller_takes_the_lease_of_a_store_that_lost_its_data(store: SwappableStore) -> None:
    metrics = Metrics()
    watch = StoreWatch(store, metrics)
    store.put(KIND_ROUTE, "m", {"w": 1})
    watch.check()
    leadership = Leadership(Lease(store, "me", ttl_s=5.0), watch, metrics)
    assert leadership.acquire() and leadership.held()
    assert gauge(metrics, "servegate_controller_leader") == 1
    store.wipe()
    watch.check()
    assert not leadership.acquire() and not leadership.held()
    assert gauge(metrics, "servegate_controller_leader") == 0
    assert store.list("lease") == []  # nothing was written into the emptied store


def test_a_new_or_returning_leader_waits_for_the_slices_to_settle(store: SwappableStore) -> None:
    watch, now = StoreWatch(store, Metrics()), [0.0]
    leadership = Leadership(Lease(store, "me", ttl_s=60.0, clock=lambda: now[0]), watch, Metrics(),
                            settle_s=2.5, clock=lambda: now[0])
    assert not leadership.acquire()  # holds the lease, but the replicas' last seconds may be in flight
    now[0] = 2.4
    assert not leadership.acquire() and not leadership.held()
    now[0] = 2.5
    assert leadership.acquire() and leadership.held()
    store.down = True  # the lease cannot be renewed while the store is away ...
    now[0] = 3.0
    assert not leadership.acquire()
    store.down = False
    now[0] = 3.5
    assert not leadership.acquire()  # ... and once it is back, the slices shipped late settle first
    now[0] = 6.0
    assert leadership.acquire()
