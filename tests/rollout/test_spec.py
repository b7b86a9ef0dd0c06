"""Rollout specs: the documented format, defaults, durations, field-naming errors, round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.errors import InvalidSpec
from rollout.spec import (
    AnalysisSpec,
    PauseStep,
    RolloutSpec,
    WeightStep,
    format_duration,
    parse_duration,
    parse_spec,
)

ISSUE_EXAMPLE = """
candidate: "3"
strategy: canary            # canary | blue_green | ab
steps: [{weight: 5}, {weight: 25}, {weight: 50}, {pause: manual}, {weight: 100}]
window: 30s                 # analysis window per step
analysis:
  min_requests: 200         # fewer -> inconclusive
  max_error_rate: 0.01
  max_p99_latency_ms: 50
  max_p99_latency_ratio: 1.5   # candidate p99 / stable p99 in the same window
  max_input_psi: 0.2
  max_prediction_psi: 0.25     # candidate vs stable prediction distributions, same window
  failure_limit: 1
  on_inconclusive: pause      # pause | rollback
sticky_key: x-user-id
shadow_percent: 0
retry_on_stable: true       # a request that fails on the candidate is re-run on stable
approval: auto              # auto | manual (an admin other than the starter must approve)
"""


def test_the_documented_example_parses_field_by_field() -> None:
    spec = parse_spec(ISSUE_EXAMPLE)
    assert spec.candidate == "3"
    assert spec.strategy == "canary"
    assert spec.steps == (WeightStep(5), WeightStep(25), WeightStep(50), PauseStep(None), WeightStep(100))
    assert spec.window_s == 30.0
    assert spec.analysis == AnalysisSpec(min_requests=200, max_error_rate=0.01, max_p99_latency_ms=50,
                                         max_p99_latency_ratio=1.5, max_input_psi=0.2,
                                         max_prediction_psi=0.25, failure_limit=1, on_inconclusive="pause")
    assert spec.sticky_key == "x-user-id"
    assert (spec.shadow_percent, spec.retry_on_stable, spec.approval) == (0, True, "auto")
    assert spec.rollback_window_s == 300.0


def test_json_text_yaml_text_and_a_mapping_agree() -> None:
    from_yaml = parse_spec(ISSUE_EXAMPLE)
    as_dict = yaml.safe_load(ISSUE_EXAMPLE)
    assert parse_spec(json.dumps(as_dict)) == from_yaml
    assert parse_spec(json.dumps(as_dict).encode()) == from_yaml
    assert parse_spec(as_dict) == from_yaml


def test_a_minimal_spec_gets_defaults() -> None:
    spec = parse_spec({"candidate": 3})
    assert spec.candidate == "3"
    assert spec.steps == (WeightStep(10), WeightStep(50), WeightStep(100))
    assert spec.analysis.min_requests == 100
    assert spec.analysis.max_error_rate == 0.01
    assert spec.analysis.max_p99_latency_ms is None
    assert (spec.analysis.failure_limit, spec.analysis.error_limit) == (1, 4)
    assert spec.window_s == 60.0
    assert parse_spec({"candidate": "3", "strategy": "ab", "sticky_key": "X-Tenant"}).steps == (WeightStep(50),)


def test_null_switches_a_default_check_off() -> None:
    assert parse_spec({"candidate": "3", "analysis": {"max_error_rate": None}}).analysis.max_error_rate is None


def test_blue_green_plan_wraps_pauses_between_preview_and_switch() -> None:
    spec = parse_spec({"candidate": "3", "strategy": "blue_green", "steps": [{"pause": "manual"}]})
    assert spec.plan() == (WeightStep(0), PauseStep(None), WeightStep(100))
    assert parse_spec({"candidate": "3", "strategy": "blue_green"}).plan() == (WeightStep(0), WeightStep(100))


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1.5s", 1.5), (45, 45.0), (2.5, 2.5),
    (" 10s ", 10.0),
])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration("window", text) == seconds


@pytest.mark.parametrize("text", ["30", "5 minutes", "1d", -1, True, None, "s", float("inf")])
def test_bad_durations_name_the_field(text: object) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_duration("window", text)
    assert err.value.field == "window"


@pytest.mark.parametrize(("body", "field"), [
    ({"candidate": "3", "speed": "fast"}, "speed"),
    ({"candidate": "3", "analysis": {"max_latency": 5}}, "analysis.max_latency"),
    ({}, "candidate"),
    ({"candidate": ""}, "candidate"),
    ({"candidate": "3", "strategy": "linear"}, "strategy"),
    ({"candidate": "3", "strategy": "ab"}, "sticky_key"),
    ({"candidate": "3", "strategy": "blue_green", "steps": [{"weight": 50}]}, "steps[0].weight"),
    ({"candidate": "3", "strategy": "blue_green", "sticky_key": "x-user"}, "sticky_key"),
    ({"candidate": "3", "steps": {"weight": 5}}, "steps"),
    ({"candidate": "3", "steps": [{"weight": 5}, {"weight": 120}]}, "steps[1].weight"),
    ({"candidate": "3", "steps": [{"weight": 5, "pause": "1m"}]}, "steps[0]"),
    ({"candidate": "3", "steps": [{"weight": 5}, {"pause": "forever"}]}, "steps[1].pause"),
    ({"candidate": "3", "steps": [{"weight": 5}, {"pause": 0}]}, "steps[1].pause"),
    ({"candidate": "3", "steps": [{"weight": 5}, {"hold": 1}]}, "steps[1].hold"),
    ({"candidate": "3", "steps": [{"pause": "manual"}]}, "steps"),
    ({"candidate": "3", "window": 0}, "window"),
    ({"candidate": "3", "window": "fast"}, "window"),
    ({"candidate": "3", "rollback_window": "-5m"}, "rollback_window"),
    ({"candidate": "3", "analysis": {"max_error_rate": 2}}, "analysis.max_error_rate"),
    ({"candidate": "3", "analysis": {"max_p99_latency_ms": -1}}, "analysis.max_p99_latency_ms"),
    ({"candidate": "3", "analysis": {"max_input_psi": "high"}}, "analysis.max_input_psi"),
    ({"candidate": "3", "analysis": {"min_requests": -1}}, "analysis.min_requests"),
    ({"candidate": "3", "analysis": {"failure_limit": 0}}, "analysis.failure_limit"),
    ({"candidate": "3", "analysis": {"error_limit": 1.5}}, "analysis.error_limit"),
    ({"candidate": "3", "analysis": {"on_inconclusive": "ignore"}}, "analysis.on_inconclusive"),
    ({"candidate": "3", "analysis": [1]}, "analysis"),
    ({"candidate": "3", "approval": "maybe"}, "approval"),
    ({"candidate": "3", "shadow_percent": 101}, "shadow_percent"),
    ({"candidate": "3", "retry_on_stable": "yes please"}, "retry_on_stable"),
    ({"candidate": "3", "sticky_key": "x user"}, "sticky_key"),
])
def test_bad_specs_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_spec(body)
    assert err.value.field == field


@pytest.mark.parametrize("text", ["candidate: [unclosed", "- just\n- a list\n", "42"])
def test_text_that_is_not_a_spec_object_is_refused(text: str) -> None:
    with pytest.raises(InvalidSpec):
        parse_spec(text)


def test_format_duration_prefers_exact_units() -> None:
    assert [format_duration(s) for s in (0.0, 0.5, 30.0, 90.0, 300.0, 7200.0)] == \
        ["0s", "500ms", "30s", "90s", "5m", "2h"]
    assert format_duration(0.0001) == 0.0001


durations = st.one_of(st.integers(1, 10_000).map(float), st.floats(0.001, 1e5, allow_nan=False))
thresholds = st.one_of(st.none(), st.floats(0, 1, allow_nan=False))
step_lists = st.lists(st.one_of(st.integers(0, 100).map(WeightStep),
                                st.one_of(st.none(), durations).map(PauseStep)), max_size=6)


@st.composite
def specs(draw: st.DrawFn) -> RolloutSpec:
    strategy = draw(st.sampled_from(["canary", "blue_green", "ab"]))
    steps = tuple(draw(step_lists))
    if strategy == "blue_green":
        steps = tuple(s for s in steps if isinstance(s, PauseStep))
    elif not any(isinstance(s, WeightStep) for s in steps):
        steps = (*steps, WeightStep(draw(st.integers(0, 100))))
    analysis = AnalysisSpec(
        min_requests=draw(st.integers(0, 1000)), max_error_rate=draw(thresholds),
        max_p99_latency_ms=draw(st.one_of(st.none(), durations)), max_p99_latency_ratio=draw(thresholds),
        max_input_psi=draw(thresholds), max_prediction_psi=draw(thresholds),
        failure_limit=draw(st.integers(1, 5)), error_limit=draw(st.integers(1, 5)),
        on_inconclusive=draw(st.sampled_from(["pause", "rollback"])))
    sticky = "x-user-id" if strategy == "ab" else draw(st.sampled_from([None, "x-tenant"]))
    return RolloutSpec(
        candidate=draw(st.sampled_from(["2", "v3", "2024-01"])), strategy=strategy, steps=steps,
        window_s=draw(durations), analysis=analysis, sticky_key=None if strategy == "blue_green" else sticky,
        shadow_percent=draw(st.integers(0, 100)), retry_on_stable=draw(st.booleans()),
        approval=draw(st.sampled_from(["auto", "manual"])), rollback_window_s=draw(durations))


@settings(max_examples=60, deadline=None)
@given(spec=specs())
def test_to_dict_reads_back_equal_through_json_and_yaml(spec: RolloutSpec) -> None:
    assert parse_spec(spec.to_dict()) == spec
    assert parse_spec(json.dumps(spec.to_dict())) == spec
    assert parse_spec(yaml.safe_dump(spec.to_dict())) == spec
