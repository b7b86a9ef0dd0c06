"""Streaming per-feature moments (count, mean, variance, min, max) in Welford's mergeable form.

State is a float64 array [5, F]: rows COUNT, MEAN, M2 (sum of squared deviations), MIN, MAX.
Only finite values count; NaN and infinities are left to the histogram's own slots.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

COUNT, MEAN, M2, MIN, MAX = range(5)
STATE_ROWS = 5


@njit(cache=True, nogil=True)
def new_state(features: int) -> Any:
    """An empty moments state [5, features]: count 0, min +inf, max -inf."""
    state = np.zeros((STATE_ROWS, features))
    state[MIN] = np.inf
    state[MAX] = -np.inf
    return state


@njit(cache=True, nogil=True)
def _merge_feature(state: Any, f: int, n: float, mean: float, m2: float, lo: float, hi: float) -> None:
    # Chan et al.'s pairwise update: exact for any split of the data, stable for large counts.
    if n == 0.0:
        return
    na = state[COUNT, f]
    total = na + n
    delta = mean - state[MEAN, f]
    state[MEAN, f] += delta * (n / total)
    state[M2, f] += m2 + delta * delta * (na * n / total)
    state[COUNT, f] = total
    state[MIN, f] = min(state[MIN, f], lo)
    state[MAX, f] = max(state[MAX, f], hi)


@njit(cache=True, nogil=True)
def _finite_or_nan(v: Any) -> float:
    return np.float64(v) + (np.float64(v) - np.float64(v))  # v - v is NaN for NaN and +-inf, else 0


@njit(cache=True, nogil=True)
def _sums_of_four(x0: Any, x1: Any, x2: Any, x3: Any, n: Any, total: Any, lo: Any, hi: Any) -> None:
    # Four rows per pass over the accumulators cuts their loads and stores fourfold; fmin/fmax skip
    # NaN, so mapping non-finite values to NaN leaves them out without a branch.
    for f in range(n.shape[0]):
        w0, w1 = _finite_or_nan(x0[f]), _finite_or_nan(x1[f])
        w2, w3 = _finite_or_nan(x2[f]), _finite_or_nan(x3[f])
        n[f] += (
            (1.0 if w0 == w0 else 0.0) + (1.0 if w1 == w1 else 0.0)
            + (1.0 if w2 == w2 else 0.0) + (1.0 if w3 == w3 else 0.0)
        )
        total[f] += (
            (w0 if w0 == w0 else 0.0) + (w1 if w1 == w1 else 0.0)
            + (w2 if w2 == w2 else 0.0) + (w3 if w3 == w3 else 0.0)
        )
        lo[f] = np.fmin(lo[f], np.fmin(np.fmin(w0, w1), np.fmin(w2, w3)))
        hi[f] = np.fmax(hi[f], np.fmax(np.fmax(w0, w1), np.fmax(w2, w3)))


@njit(cache=True, nogil=True)
def _batch_sums(values: Any, n: Any, total: Any, lo: Any, hi: Any) -> None:
    rows = values.shape[0]
    full = rows // 4 * 4
    for r in range(0, full, 4):
        _sums_of_four(values[r], values[r + 1], values[r + 2], values[r + 3], n, total, lo, hi)
    if full < rows:
        rest = np.full((4, values.shape[1]), np.nan)  # NaN rows count for nothing
        for r in range(full, rows):
            for f in range(values.shape[1]):
                rest[r - full, f] = values[r, f]
        _sums_of_four(rest[0], rest[1], rest[2], rest[3], n, total, lo, hi)


@njit(cache=True, nogil=True)
def _batch_m2(values: Any, mean: Any, m2: Any) -> None:
    # Second pass about the batch mean: accurate where sum-of-squares would cancel.
    for r in range(values.shape[0]):
        row = values[r]
        for f in range(row.shape[0]):
            v = np.float64(row[f])
            d = v - mean[f]
            m2[f] += d * d if v - v == 0.0 else 0.0


@njit(cache=True)  # holds the GIL, as binning.bin_batch does and for the same reason
def update_moments(values: Any, state: Any) -> None:
    """Merge the finite values of `values` [rows, F] into `state` [5, F]."""
    features = values.shape[1]
    if state.shape[0] != STATE_ROWS or state.shape[1] != features:
        raise ValueError("update_moments: expected state [5, F] for values [rows, F]")
    batch = new_state(features)  # one allocation: small batches are dominated by overheads
    n, total, m2, lo, hi = batch[COUNT], batch[MEAN], batch[M2], batch[MIN], batch[MAX]
    _batch_sums(values, n, total, lo, hi)
    for f in range(features):
        total[f] /= max(n[f], 1.0)  # the sums become means
    _batch_m2(values, total, m2)
    for f in range(features):
        _merge_feature(state, f, n[f], total[f], m2[f], lo[f], hi[f])


@njit(cache=True, nogil=True)
def merge_moments(state: Any, other: Any) -> None:
    """Merge the moments state `other` [5, F] into `state` [5, F]."""
    if state.shape[0] != STATE_ROWS or state.shape[1] != other.shape[1] or other.shape[0] != STATE_ROWS:
        raise ValueError("merge_moments: expected two states of shape [5, F]")
    for f in range(state.shape[1]):
        _merge_feature(
            state, f, other[COUNT, f], other[MEAN, f], other[M2, f], other[MIN, f], other[MAX, f]
        )


def variance(state: np.ndarray[Any, np.dtype[np.float64]], ddof: int = 0) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Per-feature variance from a state; NaN where count <= ddof."""
    count = state[COUNT]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = state[M2] / (count - ddof)
    return np.where(count > ddof, out, np.nan)
