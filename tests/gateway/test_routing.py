"""The hot-path router: weights realised, stickiness, forced versions, shadow share, fallback."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.routing import FORCE_VERSION, CompiledRoute, sticky_bucket
from rollout.policy import RouteTable, Shadow, split


def test_weights_are_realised_within_sampling_error() -> None:
    route = CompiledRoute(split("m", "1", "2", 10))
    rand = random.Random(7).random
    counts = Counter(route.choose({}, rand).version for _ in range(20_000))
    share = counts["2"] / 20_000
    assert abs(share - 0.10) < 4 * (0.1 * 0.9 / 20_000) ** 0.5


def test_ab_split_over_10000_keys_is_sticky_and_matches_weights() -> None:
    table = RouteTable(model="m", policy="ab", weights={"1": 70, "2": 30}, sticky_key="x-user-id")
    route = CompiledRoute(table)
    first = {f"user-{i}": route.choose({"x-user-id": f"user-{i}"}).version for i in range(10_000)}
    again = {k: route.choose({"x-user-id": k}).version for k in first}
    assert first == again  # the same key always lands on the same version
    share = sum(v == "2" for v in first.values()) / 10_000
    assert abs(share - 0.30) < 4 * (0.3 * 0.7 / 10_000) ** 0.5


def test_growing_the_candidate_only_moves_users_toward_it() -> None:
    keys = [f"u{i}" for i in range(5_000)]
    before = CompiledRoute(split("m", "1", "2", 10, sticky_key="k"))
    after = CompiledRoute(split("m", "1", "2", 50, sticky_key="k"))
    moved_back = [k for k in keys if before.choose({"k": k}).version == "2" and after.choose({"k": k}).version == "1"]
    assert moved_back == []


def test_forced_version_header_wins_and_mirrors_nothing() -> None:
    table = split("m", "1", "2", 0, shadow_percent=100)
    choice = CompiledRoute(table).choose({FORCE_VERSION: "7"})
    assert (choice.version, choice.shadow, choice.fallback) == ("7", None, None)


def test_shadow_share_and_fallback() -> None:
    table = RouteTable(model="m", policy="canary", weights={"1": 100}, shadow=Shadow("2", 25))
    route = CompiledRoute(table)
    rand = random.Random(3).random
    mirrored = sum(route.choose({}, rand).shadow == "2" for _ in range(8_000)) / 8_000
    assert abs(mirrored - 0.25) < 0.03
    canary = CompiledRoute(split("m", "1", "2", 100, fallback=True))
    assert canary.choose({}).fallback == "1"


def test_sticky_buckets_are_stable_values() -> None:
    assert sticky_bucket("alice") == sticky_bucket("alice")
    assert 0 <= sticky_bucket("bob") < 10_000


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 100), min_size=2, max_size=5), st.floats(0, 0.999999))
def test_only_versions_with_weight_are_chosen(raw: list[int], r: float) -> None:
    total = sum(raw)
    if total == 0:
        return
    weights = [w * 100 // total for w in raw]
    weights[0] += 100 - sum(weights)
    table = RouteTable(model="m", policy="canary", weights={str(i): w for i, w in enumerate(weights)})
    version = CompiledRoute(table).choose({}, lambda: r).version
    assert table.weights[version] > 0


@pytest.mark.parametrize("percent", [0, 1, 50, 99, 100])
def test_every_bucket_maps_to_a_version(percent: int) -> None:
    route = CompiledRoute(split("m", "1", "2", percent))
    for point in (0.0, 0.5, 0.999999):
        assert route.choose({}, lambda p=point: p).version in ("1", "2")
