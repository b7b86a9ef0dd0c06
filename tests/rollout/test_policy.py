"""Route tables: the PUT /traffic shape, its validation, and the loaded-version set."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.errors import InvalidSpec
from rollout.policy import RouteTable, Shadow, blue_green, parse_traffic, single, split

EXAMPLES = [
    {"policy": "canary", "weights": {"1": 90, "2": 10}},
    {"policy": "blue_green", "active": "2", "preview": "3"},
    {"policy": "ab", "weights": {"1": 50, "2": 50}, "sticky_key": "x-user-id"},
    {"policy": "canary", "weights": {"1": 100}, "shadow": {"version": "3", "percent": 10}},
    {"policy": "blue_green", "active": "2", "preview": "3", "shadow": {"version": "3", "percent": 100}},
    {"policy": "canary", "weights": {"1": 0, "2": 100}, "fallback": "1", "retained": {"0": 1700.5}},
]


@pytest.mark.parametrize("body", EXAMPLES)
def test_documented_bodies_read_back_to_the_same_shape(body: dict[str, Any]) -> None:
    table = parse_traffic("m", json.loads(json.dumps(body)))
    assert table.to_dict() == body
    assert parse_traffic("m", table.to_dict()) == table


@pytest.mark.parametrize(("body", "field"), [
    ({"policy": "canary", "weights": {"1": 90, "2": 9}}, "weights"),
    ({"policy": "canary", "weights": {"1": 101}}, "weights.1"),
    ({"policy": "canary", "weights": {"1": -1, "2": 101}}, "weights.1"),
    ({"policy": "canary", "weights": {"1": 50.0, "2": 50}}, "weights.1"),
    ({"policy": "canary", "weights": {"1": True, "2": 99}}, "weights.1"),
    ({"policy": "canary", "weights": {}}, "weights"),
    ({"policy": "canary", "weights": [100]}, "weights"),
    ({"policy": "canary"}, "weights"),
    ({"policy": "weighted", "weights": {"1": 100}}, "policy"),
    ({"weights": {"1": 100}}, "policy"),
    ({"policy": 3, "weights": {"1": 100}}, "policy"),
    ({"policy": "blue_green", "preview": "3"}, "active"),
    ({"policy": "blue_green", "active": "2", "preview": "2"}, "preview"),
    ({"policy": "blue_green", "active": "2", "weights": {"2": 50, "3": 50}}, "weights"),
    ({"policy": "blue_green", "active": "2", "sticky_key": "x-user"}, "sticky_key"),
    ({"policy": "canary", "weights": {"1": 100}, "active": "1"}, "active"),
    ({"policy": "ab", "weights": {"1": 50, "2": 50}}, "sticky_key"),
    ({"policy": "ab", "weights": {"1": 100}, "sticky_key": "x-user"}, "weights"),
    ({"policy": "ab", "weights": {"1": 50, "2": 50}, "sticky_key": "x user"}, "sticky_key"),
    ({"policy": "canary", "weights": {"1": 100}, "shadow": {"version": "3", "percent": 150}}, "shadow.percent"),
    ({"policy": "canary", "weights": {"1": 100}, "shadow": {"percent": 10}}, "shadow"),
    ({"policy": "canary", "weights": {"1": 100}, "shadow": {"version": "1", "percent": 10}}, "shadow.version"),
    ({"policy": "canary", "weights": {"1": 100}, "fallback": "2"}, "fallback"),
    ({"policy": "canary", "weights": {"1": 100}, "retained": {"2": "soon"}}, "retained.2"),
    ({"policy": "canary", "weights": {"1": 100}, "mirror": 5}, "mirror"),
])
def test_bad_bodies_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_traffic("m", body)
    assert err.value.field == field
    assert field in str(err.value)


def test_a_body_must_be_an_object() -> None:
    with pytest.raises(InvalidSpec, match="JSON object"):
        parse_traffic("m", ["canary"])


def test_sticky_key_is_lower_cased_for_headers_and_metadata() -> None:
    table = parse_traffic("m", {"policy": "ab", "weights": {"1": 50, "2": 50}, "sticky_key": "X-User-Id"})
    assert table.sticky_key == "x-user-id"


def test_blue_green_derives_weights_so_every_table_sums_to_100() -> None:
    table = blue_green("m", "2", "3")
    assert dict(table.weights) == {"2": 100, "3": 0}
    assert "weights" not in table.to_dict()


def test_versions_in_use_covers_every_version_that_must_stay_loaded() -> None:
    table = split("m", "1", "2", 100, shadow_percent=0, fallback=True).with_retained("0", 50.0)
    assert table.versions_in_use() == {"0", "1", "2"}
    assert table.versions_in_use(now=10.0) == {"0", "1", "2"}
    assert table.versions_in_use(now=60.0) == {"1", "2"}
    shadowed = RouteTable(model="m", policy="canary", weights={"1": 100}, shadow=Shadow("3", 5))
    assert shadowed.versions_in_use() == {"1", "3"}
    assert blue_green("m", "2", "3").versions_in_use() == {"2", "3"}


def test_expired_retention_is_dropped() -> None:
    table = single("m", "2").with_retained("1", 100.0).with_retained("0", 10.0)
    assert dict(table.without_expired(50.0).retained) == {"1": 100.0}


def test_with_weights_replaces_the_split() -> None:
    table = blue_green("m", "1", "2").with_weights("1", "2", 25)
    assert table.policy == "canary"
    assert dict(table.weights) == {"1": 75, "2": 25}
    with pytest.raises(InvalidSpec):
        table.with_weights("1", "2", 101)


def test_split_sends_shadow_copies_only_below_full_weight() -> None:
    assert split("m", "1", "2", 10, shadow_percent=20).shadow == Shadow("2", 20)
    assert split("m", "1", "2", 100, shadow_percent=20).shadow is None
    assert split("m", "1", "2", 0, fallback=True).fallback is None
    assert split("m", "1", "2", 5, fallback=True).fallback == "1"


def test_tables_are_immutable() -> None:
    table = single("m", "1")
    with pytest.raises(TypeError):
        table.weights["1"] = 50  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.policy = "ab"  # type: ignore[misc]
    assert hash(table) == hash(single("m", "1"))


@st.composite
def weight_maps(draw: st.DrawFn) -> dict[str, int]:
    n = draw(st.integers(min_value=1, max_value=5))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
    bounds = [0, *cuts, 100]
    return {str(i + 1): bounds[i + 1] - bounds[i] for i in range(n)}


@settings(max_examples=60, deadline=None)
@given(weights=weight_maps(), sticky=st.sampled_from([None, "x-user-id"]),
       shadow=st.one_of(st.none(), st.integers(0, 100)))
def test_any_valid_split_round_trips(weights: dict[str, int], sticky: str | None,
                                     shadow: int | None) -> None:
    body: dict[str, Any] = {"policy": "ab" if sticky and len(weights) > 1 else "canary", "weights": weights}
    if sticky:
        body["sticky_key"] = sticky
    if shadow is not None:
        body["shadow"] = {"version": "shadow", "percent": shadow}
    table = parse_traffic("m", body)
    assert sum(table.weights.values()) == 100
    assert parse_traffic("m", json.loads(json.dumps(table.to_dict()))) == table


@settings(max_examples=60, deadline=None)
@given(weights=st.dictionaries(st.sampled_from("abcd"), st.integers(-5, 105), min_size=1, max_size=4))
def test_a_table_exists_only_when_weights_are_percents_summing_to_100(weights: dict[str, int]) -> None:
    valid = all(0 <= w <= 100 for w in weights.values()) and sum(weights.values()) == 100
    if valid:
        assert dict(parse_traffic("m", {"policy": "canary", "weights": weights}).weights) == weights
    else:
        with pytest.raises(InvalidSpec):
            parse_traffic("m", {"policy": "canary", "weights": weights})
