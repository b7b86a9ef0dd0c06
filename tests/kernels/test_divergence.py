"""PSI, Jensen-Shannon distance and binned KS against numpy/scipy, to 1e-9."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp

from kernels import reference
from kernels.divergence import PSI_EPSILON, js_distance, ks_binned, psi


@st.composite
def count_pairs(draw: st.DrawFn) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    features = draw(st.integers(1, 8))
    slots = draw(st.integers(4, 16))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sparsity = draw(st.sampled_from([0.0, 0.3, 0.7]))
    pair = []
    for _ in range(2):
        c = rng.integers(0, 40, size=(features, slots))
        c[rng.random(c.shape) < sparsity] = 0
        pair.append(c.astype(np.int64))
    if draw(st.booleans()):
        pair[1][0] = 0  # a feature with no observations in the window
    return pair[0], pair[1]


def close_with_nans(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(count_pairs())
def test_psi_matches_numpy(pair: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> None:
    close_with_nans(psi(pair[0], pair[1], PSI_EPSILON), reference.psi(pair[0], pair[1]))


@settings(max_examples=60, deadline=None)
@given(count_pairs())
def test_js_distance_matches_scipy(pair: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> None:
    close_with_nans(js_distance(pair[0], pair[1]), reference.js_distance(pair[0], pair[1]))


@settings(max_examples=60, deadline=None)
@given(count_pairs())
def test_binned_ks_matches_ks_2samp_on_expanded_samples(pair: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> None:
    # Expanding each count into that many samples at its slot index gives samples whose empirical
    # CDFs are the binned CDFs, so ks_2samp's statistic must equal the binned KS (NaN slot left out).
    close_with_nans(ks_binned(pair[0], pair[1]), reference.ks_binned(pair[0], pair[1]))


def test_binned_ks_against_ks_2samp_directly() -> None:
    expected = np.array([[0, 5, 10, 5, 0, 3]])
    actual = np.array([[1, 0, 4, 12, 2, 0]])
    slots = np.arange(5)
    want = ks_2samp(np.repeat(slots, expected[0, :5]), np.repeat(slots, actual[0, :5])).statistic
    assert abs(ks_binned(expected, actual)[0] - want) < 1e-12


def test_identical_distributions_score_zero_and_disjoint_ones_the_maximum() -> None:
    same = np.array([[3, 0, 5, 2]])
    assert psi(same, 2 * same, PSI_EPSILON)[0] == 0.0
    assert js_distance(same, 2 * same)[0] < 1e-7
    assert ks_binned(same, 2 * same)[0] == 0.0
    left, right = np.array([[5, 5, 0, 0, 0]]), np.array([[0, 0, 5, 5, 0]])
    assert abs(js_distance(left, right)[0] - 1.0) < 1e-12
    assert ks_binned(left, right)[0] == 1.0
    assert psi(left, right, PSI_EPSILON)[0] > 5.0


def test_psi_is_symmetric_and_js_distance_too() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.integers(1, 50, size=(2, 4, 10))
    np.testing.assert_allclose(psi(a, b, PSI_EPSILON), psi(b, a, PSI_EPSILON), rtol=1e-12)
    np.testing.assert_allclose(js_distance(a, b), js_distance(b, a), rtol=1e-12)
