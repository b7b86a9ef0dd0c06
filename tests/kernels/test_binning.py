"""The binning kernel against the numpy oracle: exact counts for every dtype, NaN/inf, constant features."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import reference
from kernels.binning import EdgeTable, bin_batch, float32_edges
from kernels.profile import quantile_edges

DTYPES = (np.float32, np.float64, np.int32, np.int64)


def edges_from(sample: np.ndarray[Any, Any], bins: int) -> np.ndarray[Any, Any]:
    columns = [quantile_edges(sample[:, f], bins) for f in range(sample.shape[1])]
    edges = np.full((bins - 1, sample.shape[1]), np.inf)
    for f, col in enumerate(columns):
        edges[: len(col), f] = col
    return edges


@st.composite
def batches(draw: st.DrawFn) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """A batch and edges profiled from a related sample, with NaN/inf and constant columns mixed in."""
    rows = draw(st.integers(1, 40))
    features = draw(st.integers(1, 20))
    dtype = draw(st.sampled_from(DTYPES))
    bins = draw(st.integers(2, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 3.0, 1000.0]))
    sample = np.round(rng.normal(size=(60, features)) * scale, draw(st.integers(0, 3)))
    values = np.round(rng.normal(size=(rows, features)) * scale * 1.5, 1)
    constant = rng.random(features) < 0.3
    sample[:, constant] = 2.0
    values[:, constant] = rng.choice([1.0, 2.0, 3.0], size=(rows, int(constant.sum())))
    if np.dtype(dtype).kind == "f":
        mask = rng.random(values.shape)
        values[mask < 0.05] = np.nan
        values[(mask >= 0.05) & (mask < 0.08)] = np.inf
        values[(mask >= 0.08) & (mask < 0.1)] = -np.inf
    return values.astype(dtype), edges_from(sample, bins)


@settings(max_examples=60, deadline=None)
@given(batches())
def test_kernel_counts_match_the_oracle_exactly(case: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> None:
    values, edges = case
    table = EdgeTable(edges)
    counts = table.new_counts()
    table.bin_into(values, counts)
    np.testing.assert_array_equal(counts, reference.bin_counts(values, edges))


@settings(max_examples=20, deadline=None)
@given(batches(), st.integers(1, 3))
def test_kernel_accumulates_into_existing_counts(case: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]], times: int) -> None:
    values, edges = case
    table = EdgeTable(edges)
    counts = table.new_counts()
    for _ in range(times):
        table.bin_into(values, counts)
    np.testing.assert_array_equal(counts, times * reference.bin_counts(values, edges))
    assert (counts.sum(axis=1) == times * values.shape[0]).all()


def test_slots_hold_neg_inf_finite_bins_pos_inf_nan_in_that_order() -> None:
    edges = np.array([[0.0], [1.0]])
    values = np.array([[-np.inf], [-5.0], [0.0], [0.5], [1.0], [7.0], [np.inf], [np.nan], [np.nan]])
    table = EdgeTable(edges)
    counts = table.new_counts()
    table.bin_into(values, counts)
    assert counts.tolist() == [[1, 1, 2, 2, 1, 2]]


def test_constant_reference_feature_separates_below_equal_and_above() -> None:
    edges = edges_from(np.full((50, 1), 4.0), 10)
    table = EdgeTable(edges)
    counts = table.new_counts()
    table.bin_into(np.array([[3.0], [4.0], [4.0], [4.5]], dtype=np.float32), counts)
    finite = counts[0, 1 : table.n_edges + 2]
    assert finite[0] == 1 and finite[1] == 2 and finite[2] == 1 and finite.sum() == 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_small_shape_matches_the_oracle_near_the_end_of_the_batch(dtype: Any) -> None:
    # Rows are read a full padded width at a time; the last rows are staged instead, and a NaN or an
    # infinity in the final row must land in its own slots whatever the width.
    rng = np.random.default_rng(11)
    for features in range(1, 18):
        edges = edges_from(rng.normal(size=(50, features)), 5)
        table = EdgeTable(edges)
        for rows in (1, 7, 8, 9, 15, 16, 17, 40):
            values = rng.normal(size=(rows, features)).astype(dtype)
            values[-1, -1] = np.nan
            values[-1, 0] = np.inf if features > 1 else values[-1, 0]
            counts = table.new_counts()
            table.bin_into(values, counts)
            np.testing.assert_array_equal(counts, reference.bin_counts(values, edges), err_msg=f"{rows}x{features}")


@pytest.mark.parametrize("rows", [64, 61, 3])
def test_a_784_feature_batch_matches_the_oracle(rows: int) -> None:
    rng = np.random.default_rng(rows)
    edges = edges_from(rng.normal(size=(500, 784)), 10)
    values = rng.normal(size=(rows, 784)).astype(np.float32)
    values[rng.random(values.shape) < 0.01] = np.nan
    table = EdgeTable(edges)
    counts = table.new_counts()
    table.bin_into(values, counts)
    np.testing.assert_array_equal(counts, reference.bin_counts(values, edges))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=30),
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=8),
)
def test_rounded_up_float32_edges_give_the_float64_comparison(xs: list[float], es: list[float]) -> None:
    x = np.array(xs, dtype=np.float32)[:, None]
    e = np.sort(np.array(es))[:, None]
    e32 = float32_edges(e)
    assert e32.dtype == np.float32
    np.testing.assert_array_equal(x.astype(np.float64)[None] >= e[:, None], x[None] >= e32[:, None])


@pytest.mark.parametrize("dtype", DTYPES)
def test_readonly_batches_bin_like_writable_ones(dtype: Any) -> None:
    # Request tensors decoded from bytes are read-only views; numba compiles them separately.
    rng = np.random.default_rng(3)
    edges = edges_from(rng.normal(size=(100, 8)) * 4, 6)
    values = (rng.normal(size=(16, 8)) * 4).astype(dtype)
    values.flags.writeable = False
    table = EdgeTable(edges)
    counts = table.new_counts()
    table.bin_into(values, counts)
    np.testing.assert_array_equal(counts, reference.bin_counts(values, edges))


def test_bad_edges_and_counts_are_rejected_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="edges: expected each feature's edges in ascending order"):
        EdgeTable(np.array([[1.0], [0.0]]))
    with pytest.raises(ValueError, match="edges: expected a 2-D array"):
        EdgeTable(np.array([1.0, 2.0]))
    table = EdgeTable(np.array([[0.0, 0.0]]))
    with pytest.raises(ValueError, match="counts"):
        bin_batch(np.zeros((2, 2)), table.edges64, np.zeros((2, 3), np.int64))
