"""The controller lease: one holder at a time, take-over after a silent TTL judged on the contender's own
clock, release, races decided by compare-and-set, and the controller acting only while it holds it."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import pytest

from rollout.controller import Controller, start_rollout
from rollout.errors import InvalidSpec
from rollout.lease import SAFETY_FRACTION, Lease, LeaseRecord
from rollout.spec import parse_spec
from rollout.store.base import KIND_LEASE, KIND_ROLLOUT
from rollout.store.sqlite import SqliteStore
from tests.fakes.metrics import ScriptedMetrics
from tests.fakes.registry import FakeRegistry, Stage
from tests.fakes.store import FakeStore

TTL = 5.0


@dataclass
class Clock:
    """A monotonic clock that moves only when a test says so."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def contender(store: FakeStore | SqliteStore, name: str, clock: Clock, ttl: float = TTL) -> Lease:
    return Lease(store, name, ttl_s=ttl, clock=clock, wall=lambda: 1.7e9)


def stored(store: FakeStore | SqliteStore) -> LeaseRecord:
    doc = store.get(KIND_LEASE, "controller")
    assert doc is not None
    return LeaseRecord.from_dict(doc.value)


def test_the_first_contender_takes_a_free_lease_and_the_second_waits() -> None:
    store, ca, cb = FakeStore(), Clock(), Clock()
    a, b = contender(store, "a", ca), contender(store, "b", cb)
    assert a.acquire() and a.held()
    assert not b.acquire() and not b.held()
    assert stored(store) == LeaseRecord("a", 1, TTL, 1.7e9)


def test_the_holder_renews_without_a_new_term() -> None:
    store, clock = FakeStore(), Clock()
    a = contender(store, "a", clock)
    assert a.acquire()
    first = store.get(KIND_LEASE, "controller")
    clock.now += 1.0
    assert a.acquire()
    second = store.get(KIND_LEASE, "controller")
    assert first is not None and second is not None and second.revision == first.revision + 1
    assert stored(store).term == 1 and a.term == 1


def test_a_contender_takes_over_only_after_seeing_the_lease_unchanged_for_its_ttl() -> None:
    store, ca, cb = FakeStore(), Clock(), Clock(now=7.0)  # the two clocks are unrelated
    a, b = contender(store, "a", ca), contender(store, "b", cb)
    assert a.acquire()
    assert not b.acquire()  # b first sees the document at its own 7.0
    cb.now = 7.0 + TTL - 0.01
    assert not b.acquire()
    cb.now = 7.0 + TTL
    assert b.acquire() and b.held()
    assert stored(store).holder == "b" and stored(store).term == 2 and b.term == 2


def test_every_renewal_restarts_the_contenders_wait() -> None:
    store, ca, cb = FakeStore(), Clock(), Clock()
    a, b = contender(store, "a", ca), contender(store, "b", cb)
    assert a.acquire()
    for _ in range(10):
        assert not b.acquire()
        ca.now += TTL * 0.5
        cb.now += TTL * 0.5
        assert a.acquire()
    assert stored(store).holder == "a"


def test_the_holder_stops_acting_before_any_contender_may_start() -> None:
    store, ca, cb = FakeStore(), Clock(), Clock()
    a, b = contender(store, "a", ca), contender(store, "b", cb)
    assert a.acquire()
    assert not b.acquire()  # seen at the same instant the renewal returned: the earliest possible
    step = 0.05
    while not b.acquire():
        ca.now += step
        cb.now += step
        assert cb.now < 100.0 + 3 * TTL
    assert not a.held()  # by the time b has it, a has stopped on its own clock
    assert ca.now >= 100.0 + TTL * (1 - SAFETY_FRACTION)


def test_an_expired_holder_that_wakes_up_finds_the_lease_taken() -> None:
    store, ca, cb = FakeStore(), Clock(), Clock()
    a, b = contender(store, "a", ca), contender(store, "b", cb)
    assert a.acquire() and not b.acquire()
    cb.now += TTL
    assert b.acquire()
    ca.now += 60.0  # a was paused for a minute
    assert not a.acquire() and not a.held()
    assert stored(store).holder == "b"


def test_release_hands_over_at_once() -> None:
    store, ca, cb = FakeStore(), Clock(), Clock()
    a, b = contender(store, "a", ca), contender(store, "b", cb)
    assert a.acquire() and not b.acquire()
    a.release()
    assert not a.held()
    assert stored(store).holder == ""
    assert b.acquire()  # no TTL to wait out
    assert stored(store).term == 2


def test_no_one_holds_a_lease_in_a_store_it_cannot_reach() -> None:
    store, clock = FakeStore(), Clock()
    a = contender(store, "a", clock)
    assert a.acquire()
    store.available = False
    clock.now += 1.0
    assert not a.acquire() and not a.held()
    store.available = True
    assert a.acquire() and a.held()
    assert stored(store).term == 1  # still the same holder, no new term


def test_a_held_lease_lapses_without_renewals() -> None:
    store, clock = FakeStore(), Clock()
    a = contender(store, "a", clock)
    assert a.acquire()
    clock.now += TTL * (1 - SAFETY_FRACTION) - 0.01
    assert a.held()
    clock.now += 0.02
    assert not a.held()


def test_racing_contenders_leave_exactly_one_holder() -> None:
    store = SqliteStore("sqlite:///:memory:")
    try:
        leases = [contender(store, f"c{i}", Clock()) for i in range(8)]
        results: list[bool] = [False] * 8
        barrier = threading.Barrier(8)

        def race(i: int) -> None:
            barrier.wait()
            results[i] = leases[i].acquire()

        threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(results) == 1
        assert stored(store).holder == f"c{results.index(True)}"
    finally:
        store.close()


@pytest.mark.parametrize("body", [{}, {"holder": "a", "term": 1, "ttl_s": 0, "renewed_at": 1.0},
                                  {"holder": "a", "term": "x", "ttl_s": 5, "renewed_at": 1.0}])
def test_an_unreadable_lease_document_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(InvalidSpec):
        LeaseRecord.from_dict(body)
    store, clock = FakeStore(), Clock()
    store.put(KIND_LEASE, "controller", body)
    assert not contender(store, "a", clock).acquire()


@pytest.mark.parametrize(("holder", "ttl"), [("", 5.0), ("a", 0.0), ("a", float("nan"))])
def test_lease_arguments_are_validated(holder: str, ttl: float) -> None:
    with pytest.raises(InvalidSpec):
        Lease(FakeStore(), holder, ttl_s=ttl)


# --- the controller acts only while it holds the lease ---------------------------------------------

class ScriptedLeadership:
    def __init__(self, grants: list[bool], held_after_observe: bool = True) -> None:
        self.grants, self.held_after_observe = grants, held_after_observe
        self.released = 0

    def acquire(self) -> bool:
        return self.grants.pop(0) if self.grants else False

    def held(self) -> bool:
        return self.held_after_observe

    def release(self) -> None:
        self.released += 1


def rig(leadership: ScriptedLeadership) -> tuple[FakeStore, Controller, ScriptedMetrics]:
    store, registry, metrics = FakeStore(), FakeRegistry(), ScriptedMetrics()
    registry.add("m", "1", Stage.PRODUCTION)
    registry.add("m", "2", Stage.VALIDATED)
    spec = parse_spec({"candidate": "2", "window": 1.0, "steps": [{"weight": 10}, {"weight": 100}],
                       "analysis": {"min_requests": 1, "max_error_rate": 0.5}})
    start_rollout(store, registry, "m", spec, actor="alice", now=0.0)
    clock = iter(range(5, 1000, 5))
    controller = Controller(store, registry, metrics, interval_s=0.001, leadership=leadership,
                            clock=lambda: float(next(clock)))
    return store, controller, metrics


async def run_ticks(controller: Controller, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.ensure_future(controller.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task


def revision(store: FakeStore) -> int:
    doc = store.get(KIND_ROLLOUT, "m")
    assert doc is not None
    return doc.revision


def test_a_controller_without_the_lease_neither_observes_nor_writes() -> None:
    leadership = ScriptedLeadership([False] * 1000)
    store, controller, metrics = rig(leadership)
    before = revision(store)
    asyncio.run(run_ticks(controller, 0.1))
    assert metrics.calls == [] and revision(store) == before
    assert leadership.released == 1  # run gives the lease back when it ends


def test_a_controller_with_the_lease_advances_the_rollout() -> None:
    leadership = ScriptedLeadership([True] * 1000)
    store, controller, metrics = rig(leadership)
    before = revision(store)
    asyncio.run(run_ticks(controller, 0.1))
    assert metrics.calls and revision(store) > before


def test_a_decision_is_dropped_when_the_lease_lapsed_during_the_tick() -> None:
    leadership = ScriptedLeadership([True] * 1000, held_after_observe=False)
    store, controller, metrics = rig(leadership)
    before = revision(store)
    asyncio.run(run_ticks(controller, 0.1))
    assert metrics.calls  # it observed (the lease was held at the start of the tick) ...
    assert revision(store) == before  # ... but wrote nothing after losing it
