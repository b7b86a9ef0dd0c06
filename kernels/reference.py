"""Plain numpy / scipy versions of every kernel: the oracles the property tests hold the kernels to.

The binning and moments oracles also build reference profiles, where clarity matters more than speed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels.divergence import PSI_EPSILON
from kernels.moments import COUNT, M2, MAX, MEAN, MIN, STATE_ROWS

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


def bin_counts(values: np.ndarray[Any, Any], edges: np.ndarray[Any, Any]) -> IntArray:
    """Counts [F, E + 4] of `values` [rows, F] against `edges` [E, F], in the kernel's slot layout."""
    x = np.asarray(values, dtype=np.float64)
    table = np.asarray(edges, dtype=np.float64)
    n_edges = table.shape[0]
    counts = np.zeros((x.shape[1], n_edges + 4), np.int64)
    for f in range(x.shape[1]):
        col = x[:, f]
        slot = np.searchsorted(table[:, f], col, side="right") + 1
        slot[np.isneginf(col)] = 0
        slot[np.isposinf(col)] = n_edges + 2
        slot[np.isnan(col)] = n_edges + 3
        counts[f] = np.bincount(slot, minlength=n_edges + 4)
    return counts


def moments(values: np.ndarray[Any, Any]) -> FloatArray:
    """Moments state [5, F] of the finite values of `values` [rows, F], computed directly."""
    x = np.asarray(values, dtype=np.float64)
    state = np.zeros((STATE_ROWS, x.shape[1]))
    state[MIN], state[MAX] = np.inf, -np.inf
    for f in range(x.shape[1]):
        col = x[:, f][np.isfinite(x[:, f])]
        if col.size:
            state[COUNT, f] = col.size
            state[MEAN, f] = col.mean()
            state[M2, f] = ((col - col.mean()) ** 2).sum()
            state[MIN, f] = col.min()
            state[MAX, f] = col.max()
    return state


def _proportions(counts: np.ndarray[Any, Any]) -> FloatArray:
    c = np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares: FloatArray = c / c.sum(axis=1, keepdims=True)
    return shares


def psi(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any], epsilon: float = PSI_EPSILON) -> FloatArray:
    """PSI per feature with proportions floored at `epsilon`; NaN where a side is empty."""
    with np.errstate(invalid="ignore"):
        e = np.maximum(_proportions(expected), epsilon)
        a = np.maximum(_proportions(actual), epsilon)
        out: FloatArray = ((a - e) * np.log(a / e)).sum(axis=1)
    result: FloatArray = np.where(_empty(expected, actual), np.nan, out)
    return result


def js_distance(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any]) -> FloatArray:
    """Jensen-Shannon distance (base 2) per feature, by scipy."""
    from scipy.spatial.distance import jensenshannon

    out = np.full(np.shape(expected)[0], np.nan)
    for f in np.flatnonzero(~_empty(expected, actual)):
        out[f] = jensenshannon(expected[f], actual[f], base=2)
    return out


def ks_binned(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any]) -> FloatArray:
    """Two-sample KS statistic per feature by scipy, over samples made of the ordered slot indices.

    Expanding counts into one sample value per observation (its slot index) gives two samples whose
    empirical CDFs are exactly the binned CDFs, so `ks_2samp`'s statistic is the binned KS. The NaN slot
    (last) is dropped: it has no place in the order.
    """
    from scipy.stats import ks_2samp

    e = np.asarray(expected)[:, :-1]
    a = np.asarray(actual)[:, :-1]
    out = np.full(e.shape[0], np.nan)
    slots = np.arange(e.shape[1])
    for f in range(e.shape[0]):
        if e[f].sum() and a[f].sum():
            res = ks_2samp(np.repeat(slots, e[f]), np.repeat(slots, a[f]), method="asymp")
            out[f] = float(res.statistic)
    return out


def _empty(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.bool_]]:
    empty: np.ndarray[Any, np.dtype[np.bool_]] = (np.asarray(expected).sum(axis=1) == 0) | (
        np.asarray(actual).sum(axis=1) == 0
    )
    return empty
