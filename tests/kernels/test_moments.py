"""Streaming moments: batch updates and merges agree with moments computed over all the data at once."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import reference
from kernels.moments import COUNT, MAX, MEAN, MIN, merge_moments, new_state, update_moments, variance

DTYPES = (np.float32, np.float64, np.int32, np.int64)


def assert_states_close(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> None:
    np.testing.assert_array_equal(got[COUNT], want[COUNT])
    np.testing.assert_array_equal(got[[MIN, MAX]], want[[MIN, MAX]])
    np.testing.assert_allclose(got[MEAN], want[MEAN], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(variance(got), variance(want), rtol=1e-9, atol=1e-9)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[np.ndarray[Any, Any], list[int]]:
    rows = draw(st.integers(1, 60))
    features = draw(st.integers(1, 12))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.normal(loc=draw(st.sampled_from([0.0, 1e4])), scale=50.0, size=(rows, features))
    if np.dtype(dtype).kind == "f":
        mask = rng.random(values.shape)
        values[mask < 0.1] = np.nan
        values[(mask > 0.1) & (mask < 0.15)] = np.inf
    cuts = sorted(draw(st.lists(st.integers(0, rows), max_size=4)))
    return values.astype(dtype), cuts


@settings(max_examples=50, deadline=None)
@given(chunked())
def test_batches_merged_in_any_split_match_the_oracle(case: tuple[np.ndarray[Any, Any], list[int]]) -> None:
    values, cuts = case
    state = new_state(values.shape[1])
    for part in np.split(values, cuts):
        update_moments(np.ascontiguousarray(part), state)
    assert_states_close(state, reference.moments(values))


@settings(max_examples=30, deadline=None)
@given(chunked())
def test_merging_two_states_equals_one_state_over_both(case: tuple[np.ndarray[Any, Any], list[int]]) -> None:
    values, cuts = case
    half = cuts[0] if cuts else values.shape[0] // 2
    left, right = new_state(values.shape[1]), new_state(values.shape[1])
    update_moments(np.ascontiguousarray(values[:half]), left)
    update_moments(np.ascontiguousarray(values[half:]), right)
    merge_moments(left, right)
    assert_states_close(left, reference.moments(values))


def test_non_finite_values_are_not_counted() -> None:
    state = new_state(2)
    update_moments(np.array([[1.0, np.nan], [3.0, np.inf], [np.nan, -np.inf]]), state)
    assert state[COUNT].tolist() == [2.0, 0.0]
    assert state[MEAN, 0] == 2.0 and state[MIN, 0] == 1.0 and state[MAX, 0] == 3.0
    assert variance(state)[0] == 1.0 and variance(state, ddof=1)[0] == 2.0
    assert np.isnan(variance(state)[1])


def test_large_offsets_keep_the_variance_accurate() -> None:
    # The naive sum-of-squares form loses every digit here; the merged Welford form does not.
    rng = np.random.default_rng(0)
    values = 1e9 + rng.normal(size=(1000, 1))
    state = new_state(1)
    for part in np.split(values, 10):
        update_moments(np.ascontiguousarray(part), state)
    naive = (values**2).mean() - values.mean() ** 2
    assert abs(naive - values.var()) > 1e-3
    assert variance(state)[0] == pytest.approx(values.var(), rel=1e-7)


def test_mismatched_state_is_rejected() -> None:
    with pytest.raises(ValueError, match="update_moments: expected state"):
        update_moments(np.zeros((2, 3)), new_state(2))
    with pytest.raises(ValueError, match="merge_moments"):
        merge_moments(new_state(3), new_state(2))
