"""decide / command: table tests for every path and property tests for the invariants."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.analysis import ArmWindow, Observation
from rollout.decide import (
    Action,
    Decision,
    PauseReason,
    Phase,
    RolloutStatus,
    begin,
    command,
    decide,
    route_for,
)
from rollout.errors import Conflict, InvalidSpec
from rollout.policy import RouteTable
from rollout.spec import RolloutSpec, parse_spec

T0 = 1_000.0
WINDOW = 30.0


def make_spec(**fields: Any) -> RolloutSpec:
    body: dict[str, Any] = {"candidate": "2", "window": WINDOW, "retry_on_stable": False,
                            "analysis": {"min_requests": 100, "max_error_rate": 0.01}}
    body.update(fields)
    return parse_spec(body)


def observe(kind: str, start: float, end: float) -> Observation | None:
    """good / bad (5 % errors) / few (too few requests) / none (no data)."""
    if kind == "none":
        return None
    requests, errors = {"good": (500, 0), "bad": (500, 25), "few": (10, 0)}[kind]
    return Observation(start, end, ArmWindow("2", requests, errors, 5.0, 20.0),
                       ArmWindow("1", 5000, 0, 5.0, 20.0))


def judge(spec: RolloutSpec, status: RolloutStatus, kind: str, now: float) -> Decision:
    return decide(spec, status, observe(kind, status.window_start, now), now)


def started(spec: RolloutSpec) -> RolloutStatus:
    return begin(spec, "m", "1", "alice", T0).status


def walk(spec: RolloutSpec, kinds: list[str]) -> tuple[list[Decision], RolloutStatus]:
    """One full window per entry, each judged with the given kind."""
    status, decisions = started(spec), []
    for kind in kinds:
        decision = judge(spec, status, kind, status.window_start + WINDOW)
        decisions.append(decision)
        status = decision.status
    return decisions, status


def test_begin_enters_the_first_step() -> None:
    decision = begin(make_spec(steps=[{"weight": 5}, {"weight": 50}]), "m", "1", "alice", T0)
    assert decision.action is Action.SET_WEIGHTS
    assert decision.event == "rollout.start"
    assert decision.route.to_dict() == {"policy": "canary", "weights": {"1": 95, "2": 5}}
    s = decision.status
    assert (s.phase, s.step_index, s.started_by, s.window_start) == (Phase.PROGRESSING, 0, "alice", T0)


def test_a_first_manual_pause_waits_before_any_traffic() -> None:
    decision = begin(make_spec(steps=[{"pause": "manual"}, {"weight": 50}]), "m", "1", "alice", T0)
    assert decision.action is Action.PAUSE
    assert decision.status.pause_reason is PauseReason.STEP
    assert dict(decision.route.weights) == {"1": 100, "2": 0}


def test_a_good_candidate_walks_every_step_to_promotion() -> None:
    spec = make_spec(steps=[{"weight": 5}, {"weight": 25}, {"weight": 100}])
    decisions, status = walk(spec, ["good", "good", "good"])
    assert [d.action for d in decisions] == [Action.SET_WEIGHTS, Action.SET_WEIGHTS, Action.PROMOTE]
    assert [d.status.candidate_weight for d in decisions] == [25, 100, 100]
    assert status.phase is Phase.PROMOTED
    assert decisions[-1].route.to_dict() == {"policy": "canary", "weights": {"2": 100},
                                             "retained": {"1": T0 + 3 * WINDOW + 300}}
    assert [h["verdict"] for h in status.history] == ["successful"] * 3


def test_a_window_in_progress_holds_and_changes_nothing() -> None:
    spec = make_spec()
    status = started(spec)
    decision = judge(spec, status, "good", T0 + WINDOW - 1)
    assert decision.action is Action.HOLD
    assert decision.status is status
    assert decision.event is None


def test_a_failed_window_at_the_limit_rolls_back_at_once() -> None:
    spec = make_spec(steps=[{"weight": 20}, {"weight": 100}])
    [decision], status = walk(spec, ["bad"])
    assert decision.action is Action.ROLLBACK
    assert status.phase is Phase.ROLLED_BACK
    assert status.weights == {"1": 100, "2": 0}
    assert decision.route.to_dict() == {"policy": "canary", "weights": {"1": 100}}
    assert decision.evidence["checks"][1]["name"] == "max_error_rate"
    assert decision.evidence["checks"][1]["outcome"] == "breached"
    assert decision.event == "rollout.rollback"


def test_failures_below_the_limit_hold_the_step_and_count() -> None:
    spec = make_spec(steps=[{"weight": 20}, {"weight": 100}], analysis={"failure_limit": 2, "min_requests": 100})
    decisions, status = walk(spec, ["bad", "good", "bad"])
    assert [d.action for d in decisions] == [Action.HOLD, Action.SET_WEIGHTS, Action.ROLLBACK]
    assert decisions[0].status.candidate_weight == 20
    assert decisions[0].event == "rollout.analysis_failed"
    assert (status.failures, status.consecutive_failures) == (2, 1)


def test_a_partial_window_that_already_fails_is_judged_early() -> None:
    spec = make_spec()
    status = started(spec)
    decision = judge(spec, status, "bad", T0 + 5)
    assert decision.action is Action.ROLLBACK
    assert decision.status.history[-1]["early"] is True
    assert decision.status.history[-1]["end"] == T0 + 5


def test_a_partial_window_slow_only_in_its_tail_waits_for_the_whole_window() -> None:
    """Tail latency on part of a window is noise, not a verdict: only error rates fail fast."""
    spec = make_spec(analysis={"min_requests": 100, "max_error_rate": 0.01, "max_p99_latency_ratio": 2.0})
    status = started(spec)
    slow = Observation(T0, T0 + 5, ArmWindow("2", 500, 0, 5.0, 90.0), ArmWindow("1", 5000, 0, 5.0, 20.0))
    assert decide(spec, status, slow, T0 + 5).status is status
    closing = Observation(T0, T0 + WINDOW, ArmWindow("2", 500, 0, 5.0, 90.0), ArmWindow("1", 5000, 0, 5.0, 20.0))
    decision = decide(spec, status, closing, T0 + WINDOW)
    assert decision.action is Action.ROLLBACK
    assert "max_p99_latency_ratio" in decision.reason


def test_the_latency_ratio_is_not_judged_when_the_candidate_takes_all_traffic() -> None:
    spec = make_spec(steps=[{"weight": 100}],
                     analysis={"min_requests": 100, "max_error_rate": 0.01, "max_p99_latency_ratio": 2.0})
    status = started(spec)
    assert status.candidate_weight == 100
    leftovers = Observation(T0, T0 + WINDOW, ArmWindow("2", 500, 0, 5.0, 90.0), ArmWindow("1", 120, 0, 5.0, 20.0))
    decision = decide(spec, status, leftovers, T0 + WINDOW)
    assert decision.action is Action.PROMOTE
    ratio = next(c for c in decision.status.history[-1]["checks"] if c["name"] == "max_p99_latency_ratio")
    assert ratio["outcome"] == "no_data"


def test_a_partial_window_that_is_only_short_of_requests_waits() -> None:
    spec = make_spec()
    status = started(spec)
    assert judge(spec, status, "few", T0 + 5).status is status


@pytest.mark.parametrize(("policy", "phase", "action"), [
    ("pause", Phase.PAUSED, Action.PAUSE), ("rollback", Phase.ROLLED_BACK, Action.ROLLBACK)])
def test_inconclusive_follows_on_inconclusive(policy: str, phase: Phase, action: Action) -> None:
    spec = make_spec(analysis={"min_requests": 100, "on_inconclusive": policy})
    [decision], status = walk(spec, ["few"])
    assert (decision.action, status.phase) == (action, phase)
    assert "inconclusive" in decision.reason


def test_resuming_an_inconclusive_pause_accepts_the_step() -> None:
    spec = make_spec(steps=[{"weight": 10}, {"weight": 60}])
    _, paused = walk(spec, ["few"])
    assert paused.pause_reason is PauseReason.INCONCLUSIVE
    resumed = command(spec, paused, "resume", "bob", T0 + 100)
    assert resumed.status.phase is Phase.PROGRESSING
    assert resumed.status.candidate_weight == 60
    assert resumed.event == "rollout.resume"


def test_errored_windows_retry_then_count_as_inconclusive() -> None:
    spec = make_spec(analysis={"min_requests": 100, "error_limit": 2})
    decisions, status = walk(spec, ["none", "none"])
    assert decisions[0].action is Action.HOLD
    assert decisions[0].status.consecutive_errors == 1
    assert decisions[1].action is Action.PAUSE
    assert status.pause_reason is PauseReason.INCONCLUSIVE
    assert [h["verdict"] for h in status.history] == ["error", "error"]


def test_a_timed_pause_waits_its_time_then_advances() -> None:
    spec = make_spec(steps=[{"weight": 10}, {"pause": "2m"}, {"weight": 50}])
    [entered], status = walk(spec, ["good"])
    assert entered.event == "rollout.step" and status.step_index == 1
    entered_at = status.step_started_at
    still = judge(spec, status, "good", entered_at + 60)
    assert still.status.step_index == 1
    moved = judge(spec, still.status, "good", entered_at + 120)
    assert moved.action is Action.SET_WEIGHTS
    assert moved.status.candidate_weight == 50


def test_analysis_keeps_running_during_a_pause_and_can_roll_back() -> None:
    spec = make_spec(steps=[{"weight": 10}, {"pause": "manual"}, {"weight": 50}])
    [_], paused = walk(spec, ["good"])
    assert paused.phase is Phase.PAUSED
    calm = judge(spec, paused, "good", paused.window_start + WINDOW)
    assert calm.status.phase is Phase.PAUSED and calm.status.windows == 2
    broken = judge(spec, calm.status, "bad", calm.status.window_start + WINDOW)
    assert broken.action is Action.ROLLBACK


def test_manual_approval_waits_for_someone_other_than_the_starter() -> None:
    spec = make_spec(steps=[{"weight": 50}], approval="manual")
    [decision], waiting = walk(spec, ["good"])
    assert decision.action is Action.PAUSE
    assert waiting.phase is Phase.AWAITING_APPROVAL
    assert dict(decision.route.weights) == {"1": 50, "2": 50}
    with pytest.raises(Conflict, match="cannot approve"):
        command(spec, waiting, "approve", "alice", T0 + 100)
    approved = command(spec, waiting, "approve", "carol", T0 + 100)
    assert approved.action is Action.PROMOTE
    assert approved.status.approved_by == "carol"
    assert approved.status.phase is Phase.PROMOTED


def test_pause_and_resume_by_an_operator_restart_the_step() -> None:
    spec = make_spec(steps=[{"weight": 10}, {"weight": 50}])
    status = started(spec)
    paused = command(spec, status, "pause", "bob", T0 + 10)
    assert (paused.action, paused.status.pause_reason) == (Action.PAUSE, PauseReason.OPERATOR)
    with pytest.raises(Conflict, match="cannot pause"):
        command(spec, paused.status, "pause", "bob", T0 + 11)
    resumed = command(spec, paused.status, "resume", "bob", T0 + 20)
    assert resumed.status.phase is Phase.PROGRESSING
    assert (resumed.status.step_index, resumed.status.window_start) == (0, T0 + 20)
    with pytest.raises(Conflict, match="cannot resume"):
        command(spec, resumed.status, "resume", "bob", T0 + 21)


@pytest.mark.parametrize(("approval", "phase"), [("auto", Phase.PROMOTED), ("manual", Phase.AWAITING_APPROVAL)])
def test_promote_skips_the_remaining_steps_but_not_approval(approval: str, phase: Phase) -> None:
    spec = make_spec(steps=[{"weight": 5}, {"weight": 50}, {"weight": 100}], approval=approval)
    decision = command(spec, started(spec), "promote", "bob", T0 + 1)
    assert decision.status.phase is phase
    if phase is Phase.AWAITING_APPROVAL:
        with pytest.raises(Conflict, match="approve"):
            command(spec, decision.status, "promote", "bob", T0 + 2)


def test_abort_rolls_back_now() -> None:
    spec = make_spec()
    decision = command(spec, started(spec), "abort", "bob", T0 + 1)
    assert (decision.action, decision.status.phase) == (Action.ROLLBACK, Phase.ABORTED)
    assert decision.route.to_dict() == {"policy": "canary", "weights": {"1": 100}}
    assert decision.event == "rollout.abort"


def test_approve_without_a_pending_approval_is_a_conflict() -> None:
    spec = make_spec()
    with pytest.raises(Conflict, match="nothing awaits approval"):
        command(spec, started(spec), "approve", "carol", T0 + 1)


def test_unknown_verbs_and_missing_actors_name_the_field() -> None:
    spec = make_spec()
    with pytest.raises(InvalidSpec) as err:
        command(spec, started(spec), "undo", "bob", T0)
    assert err.value.field == "verb"
    with pytest.raises(InvalidSpec) as err:
        command(spec, started(spec), "pause", " ", T0)
    assert err.value.field == "actor"


def test_blue_green_previews_switches_then_promotes() -> None:
    spec = make_spec(strategy="blue_green", shadow_percent=50, retry_on_stable=True)
    first = begin(spec, "m", "1", "alice", T0)
    assert first.route.to_dict() == {"policy": "blue_green", "active": "1", "preview": "2",
                                     "shadow": {"version": "2", "percent": 50}}
    decisions, status = walk(spec, ["good", "good"])
    assert decisions[0].route.to_dict() == {"policy": "blue_green", "active": "2", "preview": "1",
                                            "fallback": "1"}
    assert decisions[1].action is Action.PROMOTE
    assert status.phase is Phase.PROMOTED


def test_blue_green_switches_back_when_the_post_switch_window_fails() -> None:
    spec = make_spec(strategy="blue_green")
    decisions, _ = walk(spec, ["good", "bad"])
    assert decisions[1].action is Action.ROLLBACK
    assert decisions[1].route.to_dict() == {"policy": "canary", "weights": {"1": 100}}


def test_ab_routes_with_the_sticky_key() -> None:
    spec = make_spec(strategy="ab", sticky_key="x-user-id", steps=[{"weight": 50}, {"pause": "1h"}])
    route = begin(spec, "m", "1", "alice", T0).route
    assert route.to_dict() == {"policy": "ab", "weights": {"1": 50, "2": 50}, "sticky_key": "x-user-id"}


def test_status_round_trips_through_json() -> None:
    spec = make_spec(steps=[{"weight": 10}, {"pause": "manual"}])
    _, status = walk(spec, ["good"])
    again = RolloutStatus.from_dict(json.loads(json.dumps(status.to_dict(), allow_nan=False)))
    assert again == status


def test_a_malformed_status_document_is_refused_with_its_field() -> None:
    with pytest.raises(InvalidSpec) as err:
        RolloutStatus.from_dict({"model": "m"})
    assert err.value.field == "status"


# -- properties --------------------------------------------------------------------------------

events = st.lists(st.tuples(st.sampled_from(["good", "bad", "few", "none", "pause", "resume", "promote",
                                             "abort", "approve"]),
                            st.sampled_from([1.0, 10.0, WINDOW, 2 * WINDOW, 200.0])),
                  min_size=1, max_size=25)


@st.composite
def any_spec(draw: st.DrawFn) -> RolloutSpec:
    strategy = draw(st.sampled_from(["canary", "blue_green", "ab"]))
    pause = st.sampled_from([{"pause": "manual"}, {"pause": 45}])
    weight = st.integers(0, 100).map(lambda w: {"weight": w})
    steps = draw(st.lists(pause if strategy == "blue_green" else st.one_of(weight, pause), max_size=5))
    if strategy != "blue_green":
        steps.append(draw(weight))
    return make_spec(strategy=strategy, steps=steps, sticky_key="x-user" if strategy == "ab" else None,
                     approval=draw(st.sampled_from(["auto", "manual"])),
                     shadow_percent=draw(st.sampled_from([0, 10])),
                     analysis={"min_requests": 100, "failure_limit": draw(st.integers(1, 3)),
                               "error_limit": draw(st.integers(1, 3)),
                               "on_inconclusive": draw(st.sampled_from(["pause", "rollback"]))})


def step_once(spec: RolloutSpec, status: RolloutStatus, kind: str, now: float) -> Decision | None:
    if kind in ("good", "bad", "few", "none"):
        return judge(spec, status, kind, now)
    actor = "carol" if kind == "approve" else "bob"
    try:
        return command(spec, status, kind, actor, now)
    except Conflict:
        return None


@settings(max_examples=120, deadline=None)
@given(spec=any_spec(), script=events)
def test_invariants_hold_along_any_history(spec: RolloutSpec, script: list[tuple[str, float]]) -> None:
    status, now = started(spec), T0
    for kind, dt in script:
        now += dt
        before = status
        decision = step_once(spec, status, kind, now)
        if decision is None:
            continue
        weights = decision.status.weights
        assert all(0 <= w <= 100 for w in weights.values()) and sum(weights.values()) == 100
        assert isinstance(decision.route, RouteTable) and sum(decision.route.weights.values()) == 100
        assert decision.route == route_for(spec, decision.status)
        judged_failed = decision.status.windows > before.windows and \
            decision.status.history[-1]["verdict"] == "failed"
        if judged_failed:
            assert decision.status.candidate_weight <= before.candidate_weight
            assert decision.action in (Action.HOLD, Action.ROLLBACK)
        if before.phase.terminal:
            assert decision.status == before
        assert step_once(spec, before, kind, now) == decision  # same inputs, same decision
        status = decision.status


@settings(max_examples=60, deadline=None)
@given(spec=any_spec(), ending=st.sampled_from(["abort", "bad"]), script=events)
def test_terminal_phases_absorb_everything(spec: RolloutSpec, ending: str,
                                           script: list[tuple[str, float]]) -> None:
    spec = make_spec(**{**spec.to_dict(), "analysis": {**spec.analysis.to_dict(), "failure_limit": 1}})
    status = started(spec)
    if ending == "abort":
        status = command(spec, status, "abort", "bob", T0 + 1).status
    else:
        status = judge(spec, status, "bad", status.window_start + WINDOW).status
    assert status.phase.terminal
    now = T0 + 1_000
    for kind, dt in script:
        now += dt
        if kind in ("good", "bad", "few", "none"):
            decision = judge(spec, status, kind, now)
            assert decision.status == status and decision.action is Action.HOLD
            assert decision.event is None
        else:
            with pytest.raises(Conflict):
                command(spec, status, kind, "carol", now)
