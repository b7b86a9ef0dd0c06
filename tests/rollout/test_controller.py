"""The controller loop against an in-memory store, registry and scripted metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from rollout.controller import Controller, apply_verb, rollout_from_document, start_rollout
from rollout.decide import Phase
from rollout.errors import Conflict, InvalidSpec, NotFound
from rollout.spec import RolloutSpec, parse_spec
from rollout.store.base import KIND_ROLLOUT, KIND_ROUTE, Write
from tests.fakes.metrics import ScriptedMetrics
from tests.fakes.registry import FakeRegistry, Stage
from tests.fakes.store import FakeStore

T0 = 10_000.0
WINDOW = 30.0
STEPS = [{"weight": 10}, {"weight": 50}, {"pause": "manual"}, {"weight": 100}]


class Rig:
    def __init__(self, store: FakeStore | None = None) -> None:
        self.store = store or FakeStore()
        self.registry = FakeRegistry()
        self.registry.add("m", "1", Stage.PRODUCTION)
        self.registry.add("m", "2", Stage.VALIDATED)
        self.metrics = ScriptedMetrics()
        self.controller = Controller(self.store, self.registry, self.metrics, interval_s=0.001)

    def spec(self, **fields: object) -> RolloutSpec:
        body: dict[str, object] = {"candidate": "2", "window": WINDOW, "steps": STEPS,
                                   "analysis": {"min_requests": 100, "max_error_rate": 0.01}}
        return parse_spec(body | fields)

    def start(self, **fields: object) -> None:
        start_rollout(self.store, self.registry, "m", self.spec(**fields), actor="alice", now=T0)

    def route(self) -> dict[str, object]:
        doc = self.store.get(KIND_ROUTE, "m")
        assert doc is not None
        return dict(doc.value)

    def phase(self) -> Phase:
        doc = self.store.get(KIND_ROLLOUT, "m")
        assert doc is not None
        return rollout_from_document(doc)[1].phase

    def actions(self) -> list[str]:
        return [r.action for r in reversed(self.store.audit(model="m"))]


def tick(rig: Rig, now: float) -> list[str]:
    return [d.action.value for d in asyncio.run(rig.controller.tick(now))]


def test_start_writes_the_first_step_and_marks_the_candidate_canary() -> None:
    rig = Rig()
    rig.start()
    assert rig.route() == {"policy": "canary", "weights": {"1": 90, "2": 10}, "fallback": "1"}
    assert rig.phase() is Phase.PROGRESSING
    assert rig.registry.get("m", "2").stage is Stage.CANARY
    [entry] = rig.store.audit(model="m")
    assert (entry.action, entry.actor, entry.version) == ("rollout.start", "alice", "2")


def test_a_second_active_rollout_is_refused() -> None:
    rig = Rig()
    rig.start()
    rig.registry.add("m", "3", Stage.VALIDATED)
    with pytest.raises(Conflict, match="already has an active rollout of version 2"):
        start_rollout(rig.store, rig.registry, "m", rig.spec(candidate="3"), actor="bob", now=T0 + 1)


@pytest.mark.parametrize(("version", "stage", "error", "message"), [
    ("9", None, NotFound, "no version 9"),
    ("3", Stage.REGISTERED, Conflict, "needs a validated version"),
    ("1", None, Conflict, "is production; a rollout needs a validated version"),
])
def test_start_checks_the_candidate_against_the_registry(version: str, stage: Stage | None,
                                                         error: type[Exception], message: str) -> None:
    rig = Rig()
    if stage is not None:
        rig.registry.add("m", version, stage)
    with pytest.raises(error, match=message):
        start_rollout(rig.store, rig.registry, "m", rig.spec(candidate=version), actor="alice", now=T0)
    assert rig.store.get(KIND_ROLLOUT, "m") is None


def test_start_needs_a_production_version() -> None:
    rig = Rig()
    rig.registry.add("n", "1", Stage.VALIDATED)
    with pytest.raises(Conflict, match="no production version"):
        start_rollout(rig.store, rig.registry, "n", rig.spec(candidate="1"), actor="alice", now=T0)


def test_a_good_candidate_walks_every_step_to_promotion() -> None:
    rig = Rig()
    rig.start()
    assert tick(rig, T0 + WINDOW) == ["set_weights"]
    assert rig.route()["weights"] == {"1": 50, "2": 50}
    assert tick(rig, T0 + 2 * WINDOW) == ["pause"]
    assert rig.phase() is Phase.PAUSED
    assert tick(rig, T0 + 3 * WINDOW) == ["hold"]  # analysis goes on; nothing advances while paused
    apply_verb(rig.store, rig.registry, "m", "resume", actor="bob", now=T0 + 3 * WINDOW + 1)
    assert rig.route()["weights"] == {"1": 0, "2": 100}
    assert tick(rig, T0 + 4 * WINDOW + 1) == ["promote"]
    assert rig.phase() is Phase.PROMOTED
    assert rig.route() == {"policy": "canary", "weights": {"2": 100},
                           "retained": {"1": T0 + 4 * WINDOW + 1 + 300}}
    assert rig.registry.get("m", "2").stage is Stage.PRODUCTION
    assert rig.registry.get("m", "1").stage is Stage.ARCHIVED
    assert rig.registry.retained_for == 300.0
    assert rig.actions() == ["rollout.start", "rollout.step", "rollout.pause", "rollout.resume",
                             "rollout.promote"]


def test_a_failing_candidate_is_rolled_back_with_evidence() -> None:
    rig = Rig()
    rig.metrics.set("2", error_rate=0.2)
    rig.start()
    assert tick(rig, T0 + 10) == ["rollback"]  # fails fast: a third of the window already breaches
    assert rig.route() == {"policy": "canary", "weights": {"1": 100}}
    assert rig.phase() is Phase.ROLLED_BACK
    assert rig.registry.get("m", "2").stage is Stage.ROLLED_BACK
    assert rig.registry.get("m", "1").stage is Stage.PRODUCTION
    rollback = rig.store.audit(model="m")[0]
    assert rollback.action == "rollout.rollback"
    breached = [c for c in rollback.evidence["checks"] if c["outcome"] == "breached"]
    assert breached == [{"name": "max_error_rate", "threshold": 0.01, "value": 0.2, "outcome": "breached"}]
    assert rollback.after is not None and rollback.after["weights"] == {"1": 100, "2": 0}


def test_a_rollback_reaches_the_local_router_before_it_is_written() -> None:
    rig = Rig()
    seen: list[tuple[dict[str, object], dict[str, int]]] = []
    rig.controller = Controller(rig.store, rig.registry, rig.metrics, interval_s=0.001,
                                on_rollback=lambda d: seen.append((rig.route(), dict(d.route.weights))))
    rig.metrics.set("2", error_rate=0.2)
    rig.start()
    assert tick(rig, T0 + 10) == ["rollback"]
    # the store still holds the pre-rollback route when the hook runs
    assert seen == [({"fallback": "1", "policy": "canary", "weights": {"1": 90, "2": 10}}, {"1": 100})]
    assert rig.route() == {"policy": "canary", "weights": {"1": 100}}


def test_a_repeated_tick_writes_nothing_new() -> None:
    rig = Rig()
    rig.start()
    tick(rig, T0 + WINDOW)
    writes, audit = rig.store.writes, len(rig.store.audit_all())
    changes = len(rig.registry.changes)
    assert tick(rig, T0 + WINDOW) == ["hold"]
    assert (rig.store.writes, len(rig.store.audit_all()), len(rig.registry.changes)) == (writes, audit, changes)


def test_a_window_in_progress_writes_nothing() -> None:
    rig = Rig()
    rig.start()
    writes = rig.store.writes
    assert tick(rig, T0 + WINDOW / 2) == ["hold"]
    assert rig.store.writes == writes


class RacingStore(FakeStore):
    """Another writer updates the rollout between this controller's read and its write, once."""

    def __init__(self) -> None:
        super().__init__()
        self.race = False

    def put_many(self, writes: Sequence[Write]) -> list[int]:
        if self.race:
            self.race = False
            doc = self.get(KIND_ROLLOUT, "m")
            assert doc is not None
            super().put_many([Write(KIND_ROLLOUT, "m", doc.value, doc.revision)])
        return super().put_many(writes)


def test_a_lost_compare_and_set_is_survived_and_retried_next_tick() -> None:
    store = RacingStore()
    rig = Rig(store)
    rig.start()
    store.race = True
    assert tick(rig, T0 + WINDOW) == []
    assert rig.route()["weights"] == {"1": 90, "2": 10}
    assert tick(rig, T0 + WINDOW + 1) == ["set_weights"]
    assert rig.route()["weights"] == {"1": 50, "2": 50}


def test_store_down_changes_nothing_and_the_loop_recovers() -> None:
    rig = Rig()
    rig.start()
    rig.store.available = False
    assert tick(rig, T0 + WINDOW) == []
    rig.store.available = True
    assert rig.route()["weights"] == {"1": 90, "2": 10}
    assert tick(rig, T0 + WINDOW) == ["set_weights"]


def test_missing_metrics_are_error_windows_not_crashes() -> None:
    rig = Rig()
    rig.start()
    rig.metrics.fail_with = RuntimeError("windows unavailable")
    assert tick(rig, T0 + WINDOW) == ["hold"]
    doc = rig.store.get(KIND_ROLLOUT, "m")
    assert doc is not None
    status = rollout_from_document(doc)[1]
    assert status.history[-1]["verdict"] == "error"
    assert status.consecutive_errors == 1


def test_a_registry_outage_at_promotion_heals_on_a_later_tick() -> None:
    rig = Rig()
    rig.start(steps=[{"weight": 50}])
    rig.registry.available = False
    assert tick(rig, T0 + WINDOW) == ["promote"]
    assert rig.phase() is Phase.PROMOTED
    rig.registry.available = True
    assert rig.registry.get("m", "2").stage is Stage.CANARY
    tick(rig, T0 + WINDOW + 1)
    assert rig.registry.get("m", "2").stage is Stage.PRODUCTION


def test_manual_approval_through_the_verbs() -> None:
    rig = Rig()
    rig.start(steps=[{"weight": 50}], approval="manual")
    assert tick(rig, T0 + WINDOW) == ["pause"]
    assert rig.phase() is Phase.AWAITING_APPROVAL
    with pytest.raises(Conflict, match="cannot approve"):
        apply_verb(rig.store, rig.registry, "m", "approve", actor="alice", now=T0 + WINDOW + 1)
    apply_verb(rig.store, rig.registry, "m", "approve", actor="carol", now=T0 + WINDOW + 2)
    assert rig.registry.get("m", "2").stage is Stage.PRODUCTION
    assert rig.store.audit(model="m")[0].actor == "carol"


def test_abort_rolls_back_and_a_new_rollout_may_follow() -> None:
    rig = Rig()
    rig.start()
    apply_verb(rig.store, rig.registry, "m", "abort", actor="bob", now=T0 + 5)
    assert rig.phase() is Phase.ABORTED
    assert rig.route() == {"policy": "canary", "weights": {"1": 100}}
    assert rig.registry.get("m", "2").stage is Stage.ROLLED_BACK
    rig.registry.add("m", "3", Stage.VALIDATED)
    start_rollout(rig.store, rig.registry, "m", rig.spec(candidate="3"), actor="bob", now=T0 + 6)
    assert rig.route()["weights"] == {"1": 90, "3": 10}


def test_verbs_need_a_rollout() -> None:
    rig = Rig()
    with pytest.raises(NotFound):
        apply_verb(rig.store, rig.registry, "m", "pause", actor="bob", now=T0)


def test_run_ticks_until_stopped() -> None:
    rig = Rig()
    rig.start(steps=[{"weight": 10}, {"weight": 100}])
    stop = asyncio.Event()
    times = iter(T0 + WINDOW * k for k in range(1, 100))

    def clock() -> float:
        now = next(times)
        if now >= T0 + 3 * WINDOW:
            stop.set()
        return now

    controller = Controller(rig.store, rig.registry, rig.metrics, interval_s=0.001, clock=clock)
    asyncio.run(asyncio.wait_for(controller.run(stop), timeout=30))
    assert rig.phase() is Phase.PROMOTED
    assert rig.registry.get("m", "2").stage is Stage.PRODUCTION


def test_the_loop_interval_must_be_positive() -> None:
    with pytest.raises(InvalidSpec) as err:
        Controller(FakeStore(), FakeRegistry(), ScriptedMetrics(), interval_s=0)
    assert err.value.field == "interval_s"
