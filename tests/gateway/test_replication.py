"""Slice shipping and merged windows: two replicas' slices add up in the controller's view, a second that
was still filling is replaced rather than counted twice, a failed push catches up, extra payloads ride
along, and an unreadable store is "no data" rather than a partial window."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from gateway.models import ModelManager
from gateway.observability.metrics import Metrics
from gateway.observability.windows import WindowRecorder
from gateway.observation import LiveMetrics
from gateway.replication import Replication
from gateway.repository import ModelConfig
from rollout.errors import InvalidSpec, StoreUnavailable
from rollout.store.base import SliceRecord
from rollout.store.sqlite import SqliteStore

T0 = 1_000_000.0


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FlakyStore(SqliteStore):
    """A real SQLite store whose slice calls can be made to fail like an unreachable backend."""

    down = False

    def put_slices(self, records: Sequence[SliceRecord], ttl_s: float) -> None:
        if self.down:
            raise StoreUnavailable("down for the test")
        super().put_slices(records, ttl_s)

    def read_slices(self, *args: object, **kwargs: object) -> list[SliceRecord]:
        if self.down:
            raise StoreUnavailable("down for the test")
        return super().read_slices(*args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def store() -> Iterator[FlakyStore]:
    s = FlakyStore("sqlite:///:memory:")
    yield s
    s.close()


class Replica:
    """A manager with versions 1 and 2 of model m whose windows run on a test clock."""

    def __init__(self, store: FlakyStore, name: str, clock: Clock) -> None:
        self.manager = ModelManager(Metrics())
        for version in ("1", "2"):
            loaded = self.manager.declare("m", version, Path("unused.onnx"), ModelConfig())
            loaded.windows = WindowRecorder(clock=clock)
        self.replication = Replication(store, self.manager, replica=name, clock=clock)

    def serve(self, version: str, n: int, ok: bool = True, seconds: float = 0.004) -> None:
        loaded = self.manager.find("m", version)
        assert loaded is not None
        for _ in range(n):
            loaded.windows.record(seconds, ok)

    def push(self) -> bool:
        return asyncio.run(self.replication.push())


def live(reader: Replication) -> LiveMetrics:
    return LiveMetrics(ModelManager(Metrics())).with_slices(reader.slices)


def test_every_replicas_slices_add_up_in_the_controllers_window(store: FlakyStore) -> None:
    clock = Clock(T0)
    a, b = Replica(store, "a", clock), Replica(store, "b", clock)
    a.serve("1", 30)
    b.serve("1", 50, ok=False)
    b.serve("2", 7, seconds=0.2)
    clock.t += 1
    a.serve("1", 5)
    assert a.push() and b.push()
    controller = Replication(store, None, replica="controller")
    observation = live(controller).observe("m", "2", "1", T0, T0 + 2)
    assert observation is not None and observation.candidate is not None and observation.stable is not None
    assert (observation.stable.requests, observation.stable.errors) == (85, 50)
    assert (observation.candidate.requests, observation.candidate.errors) == (7, 0)
    assert observation.candidate.p99_ms is not None and 190 < observation.candidate.p99_ms < 215


def test_a_second_still_filling_is_replaced_not_counted_twice(store: FlakyStore) -> None:
    clock = Clock(T0 + 0.2)
    a = Replica(store, "a", clock)
    a.serve("1", 10)
    assert a.push()
    clock.t += 0.5  # same second, more traffic
    a.serve("1", 5)
    assert a.push()
    clock.t += 3  # and a push in a later second still re-sends nothing twice
    assert a.push()
    assert sum(s.requests for s in a.replication.slices("m", "1", T0, T0 + 5)) == 15


def test_a_failed_push_is_caught_up_when_the_store_answers(store: FlakyStore) -> None:
    clock = Clock(T0)
    a = Replica(store, "a", clock)
    asyncio.run(a.replication.push())
    store.down = True
    for _ in range(5):
        a.serve("1", 4)
        clock.t += 1
        assert not a.push()
    assert a.replication.failing
    store.down = False
    assert a.push() and not a.replication.failing
    shipped = a.replication.slices("m", "1", T0, T0 + 10)
    assert sorted(s.second for s in shipped) == [int(T0) + i for i in range(5)]
    assert sum(s.requests for s in shipped) == 20


def test_an_unreadable_store_is_no_data_not_a_partial_window(store: FlakyStore) -> None:
    clock = Clock(T0)
    a = Replica(store, "a", clock)
    a.serve("1", 10)
    assert a.push()
    store.down = True
    with pytest.raises(StoreUnavailable):
        live(a.replication).observe("m", "2", "1", T0, T0 + 1)


def test_extra_payloads_ship_beside_the_slices_and_a_failing_one_harms_nothing(store: FlakyStore) -> None:
    clock = Clock(T0)
    a, b = Replica(store, "a", clock), Replica(store, "b", clock)
    a.replication.register_payload("drift", lambda m, v, s: f"{m}/{v}@{s}".encode() if v == "2" else None)

    def broken(model: str, version: str, second: int) -> bytes | None:
        raise RuntimeError("a bug in a payload")

    a.replication.register_payload("broken", broken)
    b.replication.register_payload("drift", lambda m, v, s: b"from-b" if s == int(T0) and v == "2" else None)
    a.serve("1", 3)
    assert a.push() and b.push()
    found = a.replication.payloads("drift", "m", "2", T0, T0 + 1)
    assert sorted((r.replica, r.data) for r in found) == [("a", f"m/2@{int(T0)}".encode()), ("b", b"from-b")]
    assert sum(s.requests for s in a.replication.slices("m", "1", T0, T0 + 1)) == 3
    assert a.replication.payloads("broken", "m", "1", T0, T0 + 1) == []


@pytest.mark.parametrize("name", ["window", "", "a:b", "a|b"])
def test_payload_names_are_validated(store: FlakyStore, name: str) -> None:
    with pytest.raises(InvalidSpec):
        Replication(store, None, replica="r").register_payload(name, lambda m, v, s: None)


def test_run_flushes_the_last_seconds_when_stopped(store: FlakyStore) -> None:
    a = Replica(store, "a", Clock(T0))
    a.replication.interval_s = 60.0  # only the final flush can ship within this test

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(a.replication.run(stop))
        await asyncio.sleep(0)
        a.serve("2", 9)
        stop.set()
        await task

    asyncio.run(scenario())
    assert sum(s.requests for s in a.replication.slices("m", "2", T0, T0 + 1)) == 9


def test_a_slice_from_a_newer_build_is_refused_not_misread(store: FlakyStore) -> None:
    store.put_slices([SliceRecord("m", "1", int(T0), "window", "future", b'{"schema": 2, "slice": {}}')], ttl_s=60)
    with pytest.raises(StoreUnavailable, match="schema 2"):
        Replication(store, None, replica="r").slices("m", "1", T0, T0 + 1)
