"""The log-linear histogram: percentiles within 1% of numpy's, merging, and its JSON form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtests.histogram import BUCKETS, HIGHEST_S, LOWEST_S, Histogram, bucket_bounds, bucket_of

PCTS = (1, 25, 50, 90, 99, 99.9, 100)


def _filled(values: np.ndarray) -> Histogram:
    hist = Histogram()
    for v in values:
        hist.record(float(v))
    return hist


def _assert_close(hist: Histogram, values: np.ndarray) -> None:
    for p in PCTS:
        expected = float(np.percentile(values, p, method="inverted_cdf"))
        assert hist.percentile(p) == pytest.approx(expected, rel=0.01), p


def test_percentiles_match_numpy_on_lognormal_latencies() -> None:
    values = np.random.default_rng(7).lognormal(mean=np.log(2e-3), sigma=1.2, size=20_000)
    values = np.clip(values, LOWEST_S, HIGHEST_S)
    _assert_close(_filled(values), values)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=LOWEST_S, max_value=HIGHEST_S), min_size=1, max_size=300))
def test_percentiles_within_one_percent_for_any_data(data: list[float]) -> None:
    values = np.array(data)
    _assert_close(_filled(values), values)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=LOWEST_S, max_value=HIGHEST_S))
def test_every_value_falls_inside_its_bucket(value: float) -> None:
    low, high = bucket_bounds(bucket_of(value))
    assert low <= value < high or value == HIGHEST_S
    assert (high - low) / low <= 1 / 128 + 1e-12


def test_merge_equals_recording_everything_in_one() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.exponential(0.01, 5000), rng.exponential(0.05, 3000)
    merged = _filled(a)
    merged.merge(_filled(b))
    whole = _filled(np.concatenate([a, b]))
    assert merged.counts == whole.counts
    assert merged.total == 8000
    assert merged.max_s == whole.max_s and merged.min_s == whole.min_s
    assert merged.sum_s == pytest.approx(whole.sum_s)


def test_round_trip_through_dict_keeps_counts_and_extremes() -> None:
    hist = _filled(np.random.default_rng(1).uniform(1e-4, 2.0, 1000))
    again = Histogram.from_dict(hist.to_dict())
    assert again.counts == hist.counts
    assert (again.total, again.min_s, again.max_s) == (hist.total, hist.min_s, hist.max_s)
    assert again.percentile(99) == hist.percentile(99)


def test_from_dict_refuses_a_foreign_layout_or_bad_totals() -> None:
    doc = _filled(np.array([0.001, 0.002])).to_dict()
    with pytest.raises(ValueError, match="layout"):
        Histogram.from_dict({**doc, "sub_buckets": 64})
    with pytest.raises(ValueError, match="total"):
        Histogram.from_dict({**doc, "total": 3})


def test_out_of_range_values_clamp_to_edge_buckets_but_keep_exact_extremes() -> None:
    hist = _filled(np.array([1e-9, 120.0]))
    assert set(hist.counts) == {bucket_of(LOWEST_S), bucket_of(HIGHEST_S)}
    assert max(hist.counts) < BUCKETS
    assert hist.max_s == 120.0 and hist.min_s == 1e-9
    assert hist.percentile(100) == 120.0


def test_empty_histogram_and_bad_percentile() -> None:
    hist = Histogram()
    assert hist.percentile(50) == 0.0
    assert hist.summary()["max"] == 0.0
    with pytest.raises(ValueError):
        hist.percentile(101)
